"""ZAugNet: self-supervised z-slice augmentation for 3D microscopy stacks.

The core every job uses lives here, one room per concept: :mod:`.io` (stacks in and out),
:mod:`.gaps` (what a network sees for one gap), :mod:`.variants` (ZAugNet, ZAugNet+, ZAugNet-C),
:mod:`.predict` (the z plan, models as interpolators, classical baselines, out-of-core prediction),
:mod:`.evaluate` (the paper's protocol, the self-check, metrics, FID), :mod:`.figures`,
:mod:`.phantoms`, :mod:`.tables`, :mod:`.devices`, :mod:`.errors` and :mod:`.atomic`; :mod:`.cli` is the
one command line. ``zaugnet.training`` makes models and ``zaugnet.export`` writes and reads packages;
the core imports neither.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("zaugnet")
except PackageNotFoundError:  # pragma: no cover - source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
