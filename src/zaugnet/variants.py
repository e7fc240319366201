"""Every per-variant fact, in one table: ZAugNet, ZAugNet+ and ZAugNet-C.

=========  =============  ===  ===================  ============  ================
variant    slices per gap DPM  positions            triplets      Fiji macro
=========  =============  ===  ===================  ============  ================
zaugnet    2              no   midpoints (passes)   midpoints     zaugnet.ijm
zaugnet+   2              yes  any z in (0, 1)      window        zaugnet_plus.ijm
zaugnet-c  K (even, >= 4) yes  any z in (0, 1)      window        zaugnet_c.ijm
=========  =============  ===  ===================  ============  ================

ZAugNet+ is ZAugNet-C with K = 2; ZAugNet is ZAugNet+ without the DPM channel, run in midpoint passes.
Code anywhere else asks this module (``variant(name).with_dpm``, :func:`from_channels`) instead of
comparing variant names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import InputError


@dataclass(frozen=True)
class Variant:
    """What one variant is: its inputs, what it predicts, how it trains, and how it is presented."""

    name: str  #: the configuration value, e.g. ``"zaugnet+"``
    title: str  #: e.g. ``"ZAugNet+"``
    with_dpm: bool  #: a DPM channel (the relative position z) follows the image channels
    context: bool  #: takes K slices around the gap (``context_slices``), not just the two of the gap
    macro: str  #: the Fiji macro in ``fiji_macros/`` that runs its packages
    tags: tuple[str, ...] = ()  #: BioImage.IO tags added to the common ones

    @property
    def midpoint_only(self) -> bool:
        """Predicts only z = 0.5 (a factor 2^k takes k passes) and trains on midpoint triplets."""
        return not self.with_dpm

    def n_slices(self, context_slices: int) -> int:
        """Image channels of the input: 2, or ``context_slices`` for a context variant."""
        return context_slices if self.context else 2

    def n_channels(self, n_slices: int) -> int:
        """All input channels: the ``n_slices`` images, then the DPM plane if any."""
        return n_slices + int(self.with_dpm)

    def texts(self, channels: Sequence[str] = ()) -> tuple[str, str, str]:
        """``(package name, short description, paragraph for the model card)`` for inputs named ``channels``."""
        return _TEXTS[self.name](list(channels))


VARIANTS: dict[str, Variant] = {
    v.name: v for v in (
        Variant("zaugnet", "ZAugNet", with_dpm=False, context=False, macro="zaugnet.ijm"),
        Variant("zaugnet+", "ZAugNet+", with_dpm=True, context=False, macro="zaugnet_plus.ijm"),
        Variant("zaugnet-c", "ZAugNet-C", with_dpm=True, context=True, macro="zaugnet_c.ijm",
                tags=("zaugnet-c", "cubic-interpolation")),
    )
}
#: The variant names, as the configuration and the CLI accept them.
NAMES: tuple[str, ...] = tuple(VARIANTS)


def variant(name: str) -> Variant:
    """The :class:`Variant` called ``name``.

    Raises
    ------
    InputError
        For an unknown name.
    """
    try:
        return VARIANTS[name]
    except (KeyError, TypeError):
        raise InputError("variant", f"unknown variant {name!r}; choose from {', '.join(NAMES)}") from None


def from_channels(n_channels: int) -> Variant | None:
    """The variant a package input with ``n_channels`` channels implies: 2 -> ZAugNet, 3 -> ZAugNet+,
    an odd K + 1 >= 5 -> ZAugNet-C; None for any other count."""
    if n_channels == 2:
        return VARIANTS["zaugnet"]
    if n_channels == 3:
        return VARIANTS["zaugnet+"]
    return VARIANTS["zaugnet-c"] if n_channels >= 5 and n_channels % 2 else None


def image_channels(n_channels: int) -> int:
    """How many of an input's ``n_channels`` channels are slices (the rest is the DPM), per :func:`from_channels`
    (2 -> 2, 3 -> 2, K + 1 -> K); an unknown count is taken as images and one DPM channel."""
    found = from_channels(n_channels)
    if found is None:
        return max(2, n_channels - 1)
    return n_channels - int(found.with_dpm)


_TEXTS = {
    "zaugnet-c": lambda channels: (
        "ZAugNet-C z-slice interpolation",
        f"ZAugNet-C predicts the slice at any relative position z inside a gap of a 3D microscopy stack from "
        f"the {len(channels) - 1} slices around it: cubic interpolation plus a learned correction "
        f"(self-supervised; z given as a constant DPM channel). Takes [{', '.join(channels)}] in any "
        "intensity units, returns the slice in the same units.",
        "ZAugNet-C interpolates inside the gap between slice_0 and slice_1 at any relative position z in "
        "(0, 1), seeing the slices on both sides of the gap too: its output is the 4-point cubic "
        "interpolation of the slices plus a correction learned on the data (from the slices, the cubic "
        "estimate and a ZAugNet+ flow branch). For stacks where curvature along z matters and for "
        "arbitrary upsampling factors."),
    "zaugnet+": lambda channels: (
        "ZAugNet+ z-slice interpolation",
        "ZAugNet+ predicts the slice at any relative position z between two neighbouring z-slices of a 3D "
        "microscopy stack (self-supervised GAN with knowledge distillation; z given as a constant DPM channel). "
        "Takes [slice_0, slice_1, dpm] in any intensity units, returns the slice in the same units.",
        "ZAugNet+ interpolates between two neighbouring z-slices at any relative position z in (0, 1): "
        "for stacks with non-uniform slice spacing or arbitrary upsampling factors."),
    "zaugnet": lambda channels: (
        "ZAugNet z-slice interpolation",
        "ZAugNet predicts the slice midway between two neighbouring z-slices of a 3D microscopy stack "
        "(self-supervised GAN with knowledge distillation); applied k times it multiplies the number of slices "
        "by 2^k. Takes [slice_0, slice_1] in any intensity units, returns the slice in the same units.",
        "ZAugNet predicts the slice midway between two neighbouring z-slices, to raise a stack's axial sampling."),
}
