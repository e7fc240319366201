"""Checkpoints: plain tensors and data only, loaded with ``weights_only=True``.

A checkpoint from elsewhere therefore cannot run code on the user's machine when it is opened, nor make
zaugnet allocate more than its own size: its records must be stored uncompressed, its config is bounded
(:class:`~zaugnet.training.config.NetConfig`), and the network is first built on the meta device (no
memory) to check that the weights' names and shapes are exactly the network's.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from zaugnet.atomic import atomic_path
from zaugnet.errors import InputError

from .config import Config, build_config
from .nets import ContextStudent, Generator

FORMAT = "zaugnet-checkpoint"
FORMAT_VERSION = 1
_Net = TypeVar("_Net", bound=nn.Module)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically, tagged with the format."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, tmp)
    return path


def _reason(err: Exception) -> str:
    """A one-line reason for a refused load, without torch's advice to load with ``weights_only=False``."""
    found = re.search(r"\bGLOBAL ([\w.]+)", str(err))
    if found:
        return f"it would import {found.group(1)}"
    line = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return err.__class__.__name__ if not line or "weights_only" in line else f"{err.__class__.__name__}: {line}"


def load_plain(path: str | Path, label: str | Path | None = None) -> Any:  # noqa: ANN401 - plain data
    """``torch.load(weights_only=True)`` on the CPU of a torch zip archive whose records are stored uncompressed.

    Compressed records could unpack to far more memory than the file's size (torch never writes them); they
    are refused before loading, as is the legacy (pre-zip) format.

    Raises
    ------
    InputError
        Naming ``label`` (default ``path``): the file holds anything but tensors and plain data, or is not
        such an archive.
    """
    label = path if label is None else label
    try:
        with zipfile.ZipFile(path) as archive:
            if any(info.compress_type != zipfile.ZIP_STORED for info in archive.infolist()):
                raise InputError(label, "refused to load: its records are compressed (torch never writes that)")
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError(label, f"not a readable torch file ({err.__class__.__name__}; a zip archive written by "
                                "torch.save is expected)") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputError(label, f"refused to load: it holds objects other than tensors and plain data "
                                f"({_reason(err)})") from None
    except Exception as err:  # noqa: BLE001 - any decoding failure means "not readable"
        raise InputError(label, f"not a readable torch file ({_reason(err)})") from None


def build_matching(build: Callable[[], _Net], state: Mapping[str, Any], where: str | Path, what: str) -> _Net:
    """``build()`` with ``state`` loaded, once a meta-device build (no memory) has the same tensor names and shapes.

    Parameters
    ----------
    build
        Makes the network (called twice: on the meta device, then for real).
    state
        A state dict read from a file.
    where, what
        Where the weights come from and what they must match, for the message.

    Raises
    ------
    InputError
        If ``state`` is not a dict of tensors or its names or shapes differ from the network's.
    """
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(where, "the weights are not a plain state dict of tensors")
    with torch.device("meta"):
        skeleton = build()
    want = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if want != got:
        problems = [f"missing {k}" for k in want.keys() - got.keys()] \
            + [f"unexpected {k}" for k in got.keys() - want.keys()] \
            + [f"{k} is {got[k]}, not {want[k]}" for k in want.keys() & got.keys() if got[k] != want[k]]
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise InputError(where, f"weights do not match {what} ({'; '.join(sorted(problems)[:3])}{more})")
    network = build()
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise InputError(where, f"weights do not match {what} ({_reason(err)})") from None
    return network


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (no unpickling of arbitrary objects, memory bounded by its size).

    Raises
    ------
    InputError
        If the file is missing, is not a checkpoint, or holds anything but plain data.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    state = load_plain(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(path, "not a ZAugNet checkpoint (no 'format' tag)")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(path, f"checkpoint format {state['format_version']} is newer than this zaugnet supports")
    return state


def load_generator(path: str | Path) -> tuple[Config, Generator]:
    """Config and generator (student + teacher) of a checkpoint, on the CPU in eval mode.

    The config is validated (bounded widths and depth) and the weights checked against a meta-device
    build before the generator is allocated.
    """
    state = load_checkpoint(path)
    if not isinstance(state.get("config"), dict):
        raise InputError(path, "the checkpoint has no config")
    config = build_config(state["config"], source=str(path))
    generator = build_matching(lambda: Generator(config.net), state.get("generator"), path, "its config")
    return config, generator.eval()


def warm_start(generator: Generator, path: str | Path) -> int:
    """Copy the generator weights of the checkpoint at ``path`` into ``generator`` (``train.init``); returns how
    many tensors were copied.

    Same variant: every weight. A ZAugNet-C ``generator`` from a ZAugNet+ checkpoint: its flow branch (the
    checkpoint's student) and its teacher, and its correction head is set to pass the flow branch's
    prediction through (:func:`pass_flow_through`), so the warm-started model begins exactly as the ZAugNet+
    it came from and learns from there what the slices above and below add.

    Raises
    ------
    InputError
        If the checkpoint cannot be read safely or its weights do not fit ``generator``.
    """
    config, source = load_generator(path)
    target = generator.state_dict()
    context = isinstance(generator.student, ContextStudent)
    mapped: dict[str, torch.Tensor] = {}
    for key, value in source.state_dict().items():
        if context and not isinstance(source.student, ContextStudent) and key.startswith("student."):
            key = "student.flow." + key[len("student."):]
        mapped[key] = value
    unfit = sorted(k for k, v in mapped.items() if k not in target or tuple(target[k].shape) != tuple(v.shape))
    if unfit:
        raise InputError(path, f"train.init: its {config.net.variant} weights do not fit this network "
                               f"({len(unfit)} tensors differ, e.g. {unfit[0]}); widths and depth must match")
    generator.load_state_dict(mapped, strict=False)
    if context and not isinstance(source.student, ContextStudent):
        pass_flow_through(generator.student)
    return len(mapped)


@torch.no_grad()
def pass_flow_through(student: ContextStudent) -> None:
    """Set ZAugNet-C's correction head to ``flow prediction - cubic estimate``, so that ``student(x)`` equals its
    flow branch's prediction.

    The head's input is ``[slices, dpm, cubic, flow]``; its first two channels carry ``flow + 1`` and ``cubic + 1``
    (positive, so each PReLU passes them unchanged) through 3 x 3 identity kernels, and its last convolution
    takes their difference. Its other channels keep their random start and the last convolution's weights on
    them stay zero.
    """
    convs = [layer[0] for layer in student.head[:-1]]
    last = student.head[-1]
    if convs[0].out_channels < 2:
        raise ValueError("the correction head needs at least 2 channels to pass the flow through")
    n_in = convs[0].in_channels
    for layer in convs:
        layer.weight[:2] = 0.0
        layer.bias[:2] = 0.0
    convs[0].weight[0, n_in - 1, 1, 1] = 1.0  # flow prediction (the head's last input channel)
    convs[0].weight[1, n_in - 2, 1, 1] = 1.0  # cubic estimate
    convs[0].bias[:2] = 1.0
    for layer in convs[1:]:
        layer.weight[0, 0, 1, 1] = 1.0
        layer.weight[1, 1, 1, 1] = 1.0
    last.weight.zero_()
    last.bias.zero_()
    last.weight[0, 0, 1, 1] = 1.0
    last.weight[0, 1, 1, 1] = -1.0
