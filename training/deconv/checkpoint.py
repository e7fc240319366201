"""ZS-DeconvNet checkpoints: the house format (:mod:`zaugnet.training.checkpoint`) with ``kind`` set to
:data:`~.config.FAMILY`, read without running anything from the file.

A checkpoint holds plain tensors and data only: the validated config, the network's and the optimiser's
state (and, with ``train.average_from``, the mean of the weight snapshots: the weights a model predicts with),
the step, the history, the fixed intensity affine, the stack's voxel size and the loss's PSF. It is
read with ``torch.load(weights_only=True)`` (records stored uncompressed), its config validated (bounded
widths) and the weights checked against a meta-device build before the network is allocated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zaugnet.deconv.predict import Affine
from zaugnet.errors import InputError

from ..checkpoint import build_matching, load_checkpoint
from .config import FAMILY, DeconvConfig, build_deconv_config
from .nets import ZSDeconvNet3D, receptive_radius

__all__ = ["DeconvModel", "load_deconv_checkpoint", "load_deconv_network"]


def load_deconv_checkpoint(path: str | Path) -> tuple[DeconvConfig, dict[str, Any]]:
    """The validated config and the raw state of a ZS-DeconvNet checkpoint.

    Raises
    ------
    InputError
        The file is missing, unsafe, not a checkpoint, another model family's, or its config is invalid.
    """
    state = load_checkpoint(path)
    if state.get("kind") != FAMILY:
        other = "a ZAugNet checkpoint (use zaugnet predict)" if "generator" in state else "not of ZS-DeconvNet"
        raise InputError(path, f"is {other}; a checkpoint of zaugnet deconv train is expected")
    if not isinstance(state.get("config"), dict):
        raise InputError(path, "the checkpoint has no config")
    return build_deconv_config(state["config"], source=str(path)), state


@dataclass
class DeconvModel:
    """A trained ZS-DeconvNet ready to predict: config, network (eval mode), affine, training voxel size."""

    config: DeconvConfig
    network: ZSDeconvNet3D
    affine: Affine
    voxel_size: tuple[float, float]  # z and xy spacing (um) of the stack it was trained on
    step: int

    @property
    def receptive_radius(self) -> int:
        """Voxels of context beyond which the convolutions see nothing (:func:`.nets.receptive_radius`)."""
        return receptive_radius(self.config.net)

    @property
    def multiple(self) -> int:
        """The pooling factor in y and x (U-Net: ``2 ** levels``; RCAN: 1), for aligned tiles."""
        return 2 ** self.config.net.levels if self.config.net.kind == "unet" else 1

    @property
    def bytes_per_voxel(self) -> int:
        """A generous estimate of the memory one voxel of a tile takes in a forward pass (float32 features)."""
        net = self.config.net
        if net.kind == "unet":  # the top level's features, doubled by the skip concatenation
            return 4 * 12 * net.channels
        return 4 * 6 * max(net.channels, net.head_channels)


def load_deconv_network(path: str | Path, device: str | torch.device = "cpu") -> DeconvModel:
    """The model of a checkpoint (its averaged weights where it has them), on ``device`` in eval mode (safe
    loading: module docstring)."""
    config, state = load_deconv_checkpoint(path)
    weights = state.get("average", state.get("network"))
    network = build_matching(lambda: ZSDeconvNet3D(config.net), weights, path, "its config")
    affine = Affine.from_dict(state.get("affine"), str(path))
    voxel = state.get("voxel_size")
    if not (isinstance(voxel, (list, tuple)) and len(voxel) == 2 and all(isinstance(v, float) for v in voxel)):
        raise InputError(path, "has no training voxel size")
    return DeconvModel(config, network.to(device).eval(), affine, (voxel[0], voxel[1]), int(state.get("step", 0)))
