"""ZAugNet: self-supervised z-slice augmentation for 3D microscopy stacks."""

from zaugnet.training import __version__

__all__ = ["__version__"]
