"""Validated configuration of a ZAugNet run: presets, variants, YAML and command-line overrides.

A :class:`Config` is saved as ``config.yaml`` beside every checkpoint and inside each checkpoint,
so a model always carries what built it. Unknown keys and wrong types are refused with a message
naming the field.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from zaugnet.atomic import atomic_write_text
from zaugnet.errors import InputError
from zaugnet.variants import NAMES
from zaugnet.variants import variant as get_variant

_Model = TypeVar("_Model", bound=BaseModel)

Variant = Literal[NAMES]  # type: ignore[valid-type]  # the names of zaugnet.variants
Preset = Literal["small", "paper"]

CONFIG_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=False)


class NetConfig(_Strict):
    """Network widths. ``paper`` matches the published model (10.69 M generator incl. teacher, 11.19 M critic).

    Widths are bounded by 512 and the trunk depth by 32 (the paper's are 240 and 8), so a config from
    elsewhere (a checkpoint's, a package's architecture kwargs) cannot ask for an unbounded network.

    ``zaugnet-c`` (the context variant) sees ``context_slices`` slices around each gap plus the DPM;
    its output is the 4-point cubic interpolation of the inner slices plus a learned correction
    (a ``head_width`` convolutional head over the slices, the cubic estimate and the prediction of
    a ZAugNet+ flow branch built from the other widths).
    """

    variant: Variant = "zaugnet"
    block_widths: tuple[int, int, int] = Field((240, 150, 90), description="even, in [2, 512]")
    teacher_width: int = Field(90, ge=2, le=512)
    trunk_depth: int = Field(8, ge=1, le=32)
    context_width: int = Field(16, ge=1, le=512)
    unet_width: int = Field(16, ge=1, le=512)
    critic_width: int = Field(32, ge=1, le=512)
    context_slices: int = Field(4, ge=4, le=8, description="zaugnet-c: input slices per gap (even)")
    head_width: int = Field(16, ge=1, le=512, description="zaugnet-c: width of the correction head")

    @property
    def with_dpm(self) -> bool:
        """ZAugNet+ and ZAugNet-C take the DPM (relative z position) as their last input channel."""
        return get_variant(self.variant).with_dpm

    @property
    def n_slices(self) -> int:
        """Image channels of the input: 2, or ``context_slices`` for ZAugNet-C."""
        return get_variant(self.variant).n_slices(self.context_slices)

    @model_validator(mode="after")
    def _even_widths(self) -> NetConfig:
        if any(not 2 <= w <= 512 or w % 2 for w in (*self.block_widths, self.teacher_width)):
            raise ValueError("block_widths and teacher_width must be even numbers in [2, 512]")
        if self.context_slices % 2:
            raise ValueError("context_slices must be even (as many slices above the gap as below)")
        return self


class DataConfig(_Strict):
    """Self-supervised triplets, crops, augmentation and normalisation."""

    crop_size: int = Field(256, ge=16, description="square training crop (pixels)")
    window: int = Field(7, ge=2, description="ZAugNet+: largest n3 - n1 of a triplet")
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="share of stacks (or z-blocks) held out")
    normalization: Literal["minmax", "percentile"] = "minmax"
    percentiles: tuple[float, float] = (0.1, 99.9)
    augment: bool = True
    p_jitter: float = Field(0.3, ge=0.0, le=1.0)
    contrast: tuple[float, float] = (0.5, 1.5)
    brightness: tuple[float, float] = (0.4, 1.6)
    axes: str | None = Field(None, description="axes of inputs without metadata, e.g. TZYX")
    val_max_samples: int = Field(64, ge=1, description="validation triplets scored per evaluation")

    @model_validator(mode="after")
    def _ranges(self) -> DataConfig:
        for name in ("percentiles", "contrast", "brightness"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(f"{name} must be (low, high) with low < high")
        if not 0.0 <= self.percentiles[0] < self.percentiles[1] <= 100.0:
            raise ValueError("percentiles must lie in [0, 100]")
        return self


class TrainConfig(_Strict):
    """Optimisation, losses, checkpoints and devices."""

    batch_size: int = Field(16, ge=1, description="per process and optimiser step")
    accumulate: int = Field(1, ge=1, description="split each batch into this many micro-batches whose gradients "
                            "are summed, so a large batch (the paper's 128) fits on fewer or smaller GPUs")
    max_steps: int = Field(20000, ge=1)
    lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)
    lambda_distill: float = Field(0.01, ge=0)
    lambda_adv: float = Field(0.001, ge=0, description="0 trains the generator alone, without critic")
    lambda_gp: float = Field(10.0, ge=0)
    n_critic: int = Field(5, ge=1, description="critic steps per generator step")
    seed: int = 0
    checkpoint_every: int = Field(1000, ge=1)
    val_every: int | None = Field(None, ge=1, description="steps between validations (default: once per epoch)")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto, cpu, cuda, cuda:N")
    amp: bool = Field(True, description="bfloat16 autocast where the device runs bfloat16 natively (CUDA, "
                      "CPUs with AMX or AVX512-BF16); ignored elsewhere")
    num_workers: int = Field(0, ge=0)
    init: str | None = Field(None, description="warm start: generator weights from this checkpoint (same widths; "
                             "a ZAugNet+ checkpoint also starts a ZAugNet-C's flow branch)")

    @model_validator(mode="after")
    def _whole_micro_batches(self) -> TrainConfig:
        if self.batch_size % self.accumulate:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of accumulate ({self.accumulate})")
        return self

    @property
    def adversarial(self) -> bool:
        """Whether a critic is trained (WGAN-GP)."""
        return self.lambda_adv > 0


class Config(_Strict):
    """Everything that defines a training run."""

    version: Literal[1] = CONFIG_VERSION
    preset: Preset = "paper"
    net: NetConfig = NetConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples) for YAML and checkpoints."""
        return self.model_dump(mode="json")


#: Preset values applied under the user's YAML and command-line overrides.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "small": {
        "net": {"block_widths": [48, 32, 24], "teacher_width": 24, "trunk_depth": 3, "context_width": 4,
                "unet_width": 4, "critic_width": 8},
        "data": {"crop_size": 64, "val_max_samples": 32},
        "train": {"batch_size": 8, "max_steps": 2000, "lr": 5e-4, "lambda_adv": 0.0, "checkpoint_every": 500},
    },
}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``"train.lr=3e-4"`` into ``{"train": {"lr": 3e-4}}`` (the value is read as YAML)."""
    if "=" not in text:
        raise InputError("--set", f"expected KEY=VALUE (e.g. train.lr=3e-4), got {text!r}")
    key, value = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise InputError("--set", f"expected KEY=VALUE with a key such as train.lr, got {text!r}")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        raise InputError(f"--set {key}", f"cannot read the value {value!r}") from None
    node: dict[str, Any] = {}
    cursor = node
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = parsed
    return node


def validate_layers(model: type[_Model], presets: dict[str, dict[str, Any]], layers: Sequence[dict[str, Any]],
                    source: str = "config") -> _Model:
    """``model`` validated from dicts applied in order over the chosen one of ``presets``.

    The preset is taken from the last layer that names one (default ``paper``).

    Raises
    ------
    InputError
        Naming the field (and ``source``) for unknown keys or wrong values.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _merge(merged, layer)
    preset = merged.get("preset", "paper")
    if preset not in presets:
        raise InputError(f"{source}: preset", f"unknown preset {preset!r}; choose from {sorted(presets)}")
    merged = _merge(presets[preset], merged)
    try:
        return model.model_validate(merged)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in err.errors())
        raise InputError(source, problems) from None


def build_config(*layers: dict[str, Any], source: str = "config") -> Config:
    """A ZAugNet :class:`Config` from dicts applied in order over the chosen preset (:func:`validate_layers`)."""
    return validate_layers(Config, PRESETS, layers, source)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict, with a clear error for missing or malformed files."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "config file not found") from None
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise InputError(path, f"not a readable YAML file ({err.__class__.__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(path, "the top level of a config file must be a mapping")
    return data


def save_yaml(config: Config, path: str | Path) -> None:
    """Write ``config`` as YAML (atomic)."""
    atomic_write_text(Path(path), yaml.safe_dump(config.to_dict(), sort_keys=False))
