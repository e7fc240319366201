"""Which torch device a job runs on: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked against this machine."""

from __future__ import annotations

import re

import torch

from .errors import InputError


def pick_device(spec: str, option: str = "--device", local_rank: int = 0) -> str:
    """The device for ``spec``: ``auto`` is CUDA where available, else the CPU; ``cuda`` is ``cuda:<local_rank>``
    (one GPU per process under torchrun).

    Raises
    ------
    InputError
        Naming ``option``: an unknown spec, or CUDA asked for where there is none.
    """
    if not isinstance(spec, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", spec):
        raise InputError(option, f"unknown device {spec!r}; choose auto, cpu, cuda or cuda:N")
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(option, f"{spec!r} requested but CUDA is not available")
    return f"cuda:{local_rank}" if spec == "cuda" else spec
