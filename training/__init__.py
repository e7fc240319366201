"""Training, data and networks of ZAugNet and ZAugNet+."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("zaugnet")
except PackageNotFoundError:  # pragma: no cover - source tree without install
    __version__ = "0.0.0"
