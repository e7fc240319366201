"""TorchScript export of the packaged network (scripted, so it runs at any size).

Checked with the archive written by torch 2.13: it loads and runs in torch 2.0.1 (the version of
deepImageJ's PyTorch engine) and 1.13.1, within 4e-6 of the intensity range of torch 2.13's output.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from zaugnet.errors import InputError


@contextmanager
def _jit_on_purpose() -> Iterator[None]:
    """Silence torch's notes that TorchScript is deprecated: the BioImage.IO format and deepImageJ need it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        yield


def script_network(network: nn.Module) -> torch.jit.ScriptModule:
    """``torch.jit.script`` of ``network`` in eval mode (scripting keeps the size arithmetic, unlike tracing)."""
    with _jit_on_purpose():
        return torch.jit.script(network.eval())


def save_torchscript(network: nn.Module, path: str | Path) -> Path:
    """Script ``network`` and save it to ``path`` (a TorchScript zip archive)."""
    path = Path(path)
    scripted = script_network(network)
    with _jit_on_purpose():
        torch.jit.save(scripted, str(path))
    return path


def torchscript_format_version(path: str | Path) -> int:
    """The serialisation format version of a TorchScript archive (its ``<archive>/version`` entry).

    torch writes the lowest version the archive's operators need (4 for ZAugNet's student with torch
    2.13); a runtime refuses archives newer than it knows. Whether an archive loads in an old runtime
    also depends on the operators its code calls (see :func:`zaugnet.training.nets.resize`).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            entries = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/version")]
            if not entries:
                raise InputError(path, "not a TorchScript archive (no version entry)")
            return int(archive.read(entries[0]).decode().strip())
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        raise InputError(path, f"not a readable TorchScript archive ({err})") from None


def load_torchscript(path: str | Path, device: str = "cpu") -> torch.jit.ScriptModule:
    """Load a TorchScript archive (``torch.jit.load``: no Python objects are unpickled)."""
    try:
        with _jit_on_purpose():
            module = torch.jit.load(str(path), map_location=device)
    except Exception as err:  # noqa: BLE001 - any decoding failure: not a usable archive
        raise InputError(path, f"not a loadable TorchScript model ({err.__class__.__name__}: {err})") from None
    return module.eval()
