"""Validated configuration of a ZS-DeconvNet (3D) run: presets, the PSF source, YAML and overrides.

A :class:`DeconvConfig` is saved as ``config.yaml`` beside every checkpoint and inside each checkpoint, so a
model always carries what built it. Unknown keys and wrong types are refused with a message naming the field;
every size is bounded, so a config from elsewhere (a checkpoint's) cannot ask for an unbounded network.

Presets (:data:`PRESETS`):

- ``paper``: the published 3D network (per stage: conv 64, 2 residual groups x 2 residual channel-attention
  blocks, reduction 16, long skip, head conv 64 -> conv 1 -> LeakyReLU 0.2; 2.00 M parameters for the two
  stages), patches of 13 x 64 x 64 (input slices x rows x columns), batch 3, 10,000 steps, Adam 1e-4 halved
  every 5,000 steps. A GPU network: 3D convolutions of 64 channels run at about 10 s per step on our CPUs.
- ``small``: a two-stage 3D U-Net (:class:`~.nets.UNetStage`: widths 16 / 32, 3 poolings in y and x, 0.71 M
  parameters), patches of 13 x 64 x 64, batch 2, Adam 5e-4 halved every 1,000 steps, 2,000 steps: what
  trains on 2 CPU cores in about an hour. Two departures from the paper, measured on the benchmark stack
  (issue 18's note): the deconvolved output is clamped at 0 (``net.positive``) and the input / target roles
  swap every second step (``train.alternate``). A small RCAN (16 channels, 0.07 M parameters) reaches only
  +-7 voxels per stage, too little for a widefield PSF's out-of-focus light: trained 750 steps on the
  benchmark stack it scored 24.4 dB against RL's 27-28, the U-Net 27.0 after 600 (the note of issue 18).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from zaugnet.atomic import atomic_write_text

from ..config import validate_layers

__all__ = ["CONFIG_VERSION", "FAMILY", "PRESETS", "DeconvConfig", "DeconvDataConfig", "DeconvNetConfig",
           "DeconvTrainConfig", "PSFConfig", "build_deconv_config", "save_deconv_yaml"]

CONFIG_VERSION = 1
#: The model family a checkpoint of this package names (``kind`` in the checkpoint).
FAMILY = "zs-deconvnet-3d"
Preset = Literal["small", "paper"]
#: Bounds of a patch: input (odd) slices, rows, columns.
_PATCH_MIN, _PATCH_MAX = (3, 8, 8), (64, 512, 512)
#: Largest side of the loss's PSF (voxels).
_PSF_MAX = 255


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=False)


class DeconvNetConfig(_Strict):
    """The two stages' network (the same for the denoiser and the deconvolver): the paper's 3D RCAN, or a 3D
    U-Net (``kind: unet``: ``channels`` and ``levels`` only; see :class:`~.nets.UNetStage`)."""

    kind: Literal["rcan", "unet"] = Field("rcan", description="rcan (the paper's) or unet (pooling in y and x)")
    levels: int = Field(3, ge=1, le=5, description="unet: 2x poolings in y and x")
    channels: int = Field(64, ge=1, le=256, description="features of every residual block")
    groups: int = Field(2, ge=1, le=8, description="residual groups per stage")
    blocks: int = Field(2, ge=1, le=8, description="residual channel-attention blocks per group")
    reduction: int = Field(16, ge=1, le=256, description="channel-attention bottleneck: channels // reduction")
    head_channels: int = Field(64, ge=1, le=256, description="features of the output head's first convolution")
    positive: bool = Field(False, description="the deconvolved output clamped at 0 (a ReLU after the deconvolver; "
                                              "the loss adds the mean of its negative part before the clamp)")

    @model_validator(mode="after")
    def _bottleneck(self) -> DeconvNetConfig:
        if self.kind == "rcan" and self.channels // self.reduction < 1:
            raise ValueError(f"reduction ({self.reduction}) must not exceed channels ({self.channels})")
        return self


class PSFConfig(_Strict):
    """Where the loss's PSF comes from: a TIFF (measured beads or a simulated PSF) or the pupil model.

    Either ``path`` or all of ``na``, ``wavelength`` and ``ni`` (simulate: widefield, or confocal with
    ``excitation``). The PSF is made at the training voxel size (z: twice the stack's spacing, as odd and
    even slices are each every second slice), normalised to sum 1 and cropped to the patch
    (:func:`~zaugnet.training.deconv.data.training_psf`).
    """

    path: str | None = Field(None, description="PSF or bead stack TIFF with its voxel size")
    volume: str | None = Field(None, description="channel / time point of a multi-volume PSF file, e.g. c0")
    background: float | None = Field(None, description="subtracted from a PSF file (default: its median)")
    na: float | None = Field(None, gt=0, lt=3)
    wavelength: float | None = Field(None, gt=0, le=5, description="emission wavelength (um)")
    ni: float | None = Field(None, ge=1, le=3, description="immersion refractive index")
    ns: float | None = Field(None, ge=1, le=3, description="sample refractive index (default: ni)")
    depth: float = Field(0.0, ge=0, le=1000, description="depth below the coverslip (um)")
    excitation: float | None = Field(None, gt=0, le=5, description="confocal: excitation wavelength (um)")
    size: tuple[int, int, int] | None = Field(None, description="planes, rows, columns of the loss's PSF at the "
                                              "training voxel size, odd, kept whole (default: the largest odd "
                                              "sizes within the patch, then cropped)")
    lateral_sigmas: float = Field(4.0, gt=0, le=64, description="lateral crop: +- this many sigma of a Gaussian "
                                  "fitted to the PSF's projection along z")
    padding: Literal["reflect", "zeros", "axial-zeros"] = Field(
        "reflect", description="boundary rule of the forward model (axial-zeros: zeros in z, mirrored in y and x)")

    @model_validator(mode="after")
    def _one_source(self) -> PSFConfig:
        optics = (self.na, self.wavelength, self.ni)
        if self.path is not None and any(v is not None for v in (*optics, self.ns, self.excitation)):
            raise ValueError("give either path or the optics (na, wavelength, ni), not both")
        if self.path is None and None in optics:
            raise ValueError("give path (a PSF TIFF) or na, wavelength and ni (to simulate one)")
        if self.size is not None and any(n % 2 == 0 or not 1 <= n <= _PSF_MAX for n in self.size):
            raise ValueError(f"size must be three odd numbers within 1 .. {_PSF_MAX}, got {self.size}")
        return self

    @property
    def simulated(self) -> bool:
        """Whether the PSF is computed from the optics (else read from :attr:`path`)."""
        return self.path is None


class DeconvDataConfig(_Strict):
    """Patches, the held-out block, foreground sampling and the fixed intensity normalisation."""

    channel: str | None = Field(None, description="which volumes of a multi-volume stack, e.g. c1")
    axes: str | None = Field(None, description="axes of inputs without metadata, e.g. ZCYX")
    voxel_size: tuple[float, float] | None = Field(None, description="z and xy spacing in um (default: the "
                                                   "stack's)")
    patch: tuple[int, int, int] = Field((13, 64, 64), description="input slices, rows, columns of a patch "
                                        "(a window of twice as many slices)")
    val_fraction: float = Field(0.15, ge=0.0, lt=0.5, description="share of each volume's slices held out as "
                                "its last z-block (0: no validation)")
    percentiles: tuple[float, float] = Field((0.1, 99.9), description="of all training voxels, mapped to 0 and 1")
    min_dynamic_range: float = Field(0.5, ge=0, description="reject patches with p99.9 / (p0.1 + 0.01) below this")
    min_mean: float = Field(0.01, description="reject patches whose mean (normalised) is below this")
    max_tries: int = Field(20, ge=1, le=1000, description="patches drawn before the last one is kept anyway")
    augment: bool = Field(True, description="random 90-degree rotations and flips in xy")

    @model_validator(mode="after")
    def _ranges(self) -> DeconvDataConfig:
        if any(not lo <= n <= hi for n, lo, hi in zip(self.patch, _PATCH_MIN, _PATCH_MAX)):
            raise ValueError(f"patch must be Z Y X within {_PATCH_MIN} .. {_PATCH_MAX}, got {self.patch}")
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError("percentiles must be (low, high) with 0 <= low < high <= 100")
        if self.voxel_size is not None and not all(0 < v <= 100 for v in self.voxel_size):
            raise ValueError("voxel_size must be two positive spacings in um (at most 100)")
        return self


class DeconvTrainConfig(_Strict):
    """Optimisation, the loss weights, checkpoints and the device."""

    batch_size: int = Field(3, ge=1, le=64)
    max_steps: int = Field(10000, ge=1, le=10_000_000)
    lr: float = Field(1e-4, gt=0, le=1)
    lr_halve_every: int = Field(5000, ge=1, description="the learning rate is halved every this many steps")
    mu: float = Field(0.5, ge=0, le=1, description="weight of the denoising term (1 - mu: deconvolution)")
    lam: float = Field(0.1, ge=0, description="weight of the Hessian regulariser")
    gamma: float = Field(1.0, ge=0, description="weight of the gap-amending regulariser")
    alternate: bool = Field(False, description="every second step the even slices are the input and the odd "
                                               "the target (else the target always lies one slice below the "
                                               "input and the network learns that shift)")
    average_from: int | None = Field(None, ge=1, description="the model predicts with the mean of the weights at "
                                     "every multiple of checkpoint_every from this step on (None: the last weights)")
    seed: int = 0
    checkpoint_every: int = Field(1000, ge=1)
    val_every: int = Field(100, ge=1)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto, cpu, cuda, cuda:N")

    def snapshots_at(self, step: int) -> int:
        """How many weight snapshots the mean holds after ``step`` steps: the multiples of ``checkpoint_every``
        from ``average_from`` to ``step`` (0 without averaging)."""
        if self.average_from is None:
            return 0
        first = -(-self.average_from // self.checkpoint_every)
        return max(0, step // self.checkpoint_every - first + 1)

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based): ``lr / 2 ** (step // lr_halve_every)``."""
        return self.lr * 0.5 ** (step // self.lr_halve_every)


class DeconvConfig(_Strict):
    """Everything that defines a ZS-DeconvNet training run."""

    version: Literal[1] = CONFIG_VERSION
    family: Literal["zs-deconvnet-3d"] = FAMILY
    preset: Preset = "paper"
    net: DeconvNetConfig = DeconvNetConfig()
    psf: PSFConfig
    data: DeconvDataConfig = DeconvDataConfig()
    train: DeconvTrainConfig = DeconvTrainConfig()

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples) for YAML and checkpoints."""
        return self.model_dump(mode="json")


#: Preset values applied under the user's YAML and command-line overrides.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "small": {
        "net": {"kind": "unet", "channels": 16, "levels": 3, "positive": True},
        "data": {"patch": [13, 64, 64]},
        "train": {"batch_size": 2, "max_steps": 2000, "lr": 5e-4, "lr_halve_every": 1000, "checkpoint_every": 200,
                  "alternate": True, "average_from": 1000},
    },
}


def build_deconv_config(*layers: dict[str, Any], source: str = "config") -> DeconvConfig:
    """A :class:`DeconvConfig` from dicts applied in order over the chosen preset (the last one named; default
    paper), as :func:`zaugnet.training.config.validate_layers`."""
    return validate_layers(DeconvConfig, PRESETS, layers, source)


def save_deconv_yaml(config: DeconvConfig, path: str | Path) -> None:
    """Write ``config`` as YAML (atomic)."""
    atomic_write_text(Path(path), yaml.safe_dump(config.to_dict(), sort_keys=False))
