"""Checkpoints: plain tensors and data only, loaded with ``weights_only=True``.

A checkpoint from elsewhere therefore cannot run code on the user's machine when it is opened.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_path
from .config import Config, build_config
from .errors import InputError
from .nets import Generator

FORMAT = "zaugnet-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically, tagged with the format."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, tmp)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (no unpickling of arbitrary objects).

    Raises
    ------
    InputError
        If the file is missing, is not a checkpoint, or holds anything but plain data.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise InputError(path, f"refused to load: it holds objects other than tensors and plain data ({reason})") from None
    except Exception as err:  # noqa: BLE001 - any decoding failure means "not a checkpoint"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise InputError(path, f"not a readable checkpoint ({err.__class__.__name__}: {reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(path, "not a ZAugNet checkpoint (no 'format' tag)")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(path, f"checkpoint format {state['format_version']} is newer than this zaugnet supports")
    return state


def load_generator(path: str | Path) -> tuple[Config, Generator]:
    """Config and generator (student + teacher) of a checkpoint, on the CPU in eval mode."""
    state = load_checkpoint(path)
    config = build_config(state["config"], source=str(path))
    generator = Generator(config.net)
    try:
        generator.load_state_dict(state["generator"])
    except (KeyError, RuntimeError) as err:
        raise InputError(path, f"weights do not match its config ({err.__class__.__name__})") from None
    return config, generator.eval()
