"""Out-of-core prediction for volumes larger than memory: OME-Zarr (or a memory-mapped TIFF) in, OME-Zarr out.

:func:`predict_large` makes the same slices as :func:`.predict.augment_stack` without ever holding a
whole volume (or, for min-max normalisation, a whole slice) in memory:

- The work is cut into *blocks*: one gap between two input slices (a z pair) times one XY block of
  ``chunk_yx`` x ``chunk_yx`` pixels. A block task reads the pair (four slices for ``cubic``) over the
  block plus a halo of context (the model's own ``halo``, 128 px by default; origins on the network's
  16-pixel grid, as in-memory tiling), predicts every new slice of that gap, keeps the block and writes
  it. Output chunks are one z-slice x ``chunk_yx`` x ``chunk_yx``, aligned with the blocks, so a task
  writes whole chunks and no two tasks write the same chunk.
- Tasks run with dask: the threaded scheduler by default (``num_workers`` threads; on a CPU torch then
  gets ``cores // workers`` intra-op threads each so workers do not oversubscribe the cores), or a
  ``dask.distributed`` ``Client`` (the model is scattered once to the workers; tasks are submitted in
  a bounded window). Workers must see the input and output paths (a shared file system on a cluster).
- Normalisation matches in-memory prediction: each pair is min-max normalised over the WHOLE two
  slices. A cheap first pass (dask tasks, one per slice, reading it block by block) takes every slice's
  min and max; a pair's ``(lo, scale)`` is computed from them by :func:`.data.normalize_pair` and
  handed to the block tasks, which normalise with it and run a copy of the :class:`ModelInterpolator`
  whose own normalisation is off (``normalization="none"``: the identity) and whose tile covers the
  block, then map back. The arithmetic is the in-memory one, so blocks differ from in-memory prediction
  only by tiling (within 1e-4 of the intensity range with the default halo). ``percentile``
  normalisation needs the joint percentiles of the two slices: that first pass loads one pair of whole
  slices per task (memory: a few slices, not the volume). Networks that normalise inside
  (``normalization="none"``, foreign packages) see one block at a time (a warning says so).
- Original slices are copied exactly; baselines (``linear``, ``cubic``) run the in-memory code on the
  slices around the gap and give identical values.
- ZAugNet (midpoints only) with a factor 2^k runs k passes: passes 1..k-1 write float32 intermediate
  stores (inside the unfinished output, deleted when no longer needed), the last pass writes the output.

Resume
------
The output is built in ``OUTPUT.partial`` (an OME-Zarr store from the start, with a ``.zaugnet/`` work
folder) and renamed to ``OUTPUT`` when complete, so ``OUTPUT`` only ever exists whole. After a block's
chunks are written (zarr's local store writes each chunk atomically) the task writes an empty marker
file ``.zaugnet/done/p<pass>/t<t>c<c>g<gap>/<by>_<bx>``. A rerun with ``resume=True`` checks that the
settings are the same (input, positions, method and weights, chunk and halo: ``manifest.json``), reads
the markers and the saved min/max of the first pass, and computes only the blocks without a marker.
Markers rather than chunk existence, because an all-zero chunk is never written (zarr skips chunks
equal to the fill value) and because a block writes several chunks: a killed task leaves no marker and
is simply redone. The input's fingerprint is the size and modification time of each of its files
(the TIFF, or every metadata and chunk file of the zarr array), so data rewritten between runs is
noticed without reading it; a model is identified by the sha256 of its weights file
(``ModelInterpolator.weights_sha256``) or else of its ``state_dict``, and a run with a model that has
neither is never resumed. ``restart=True`` (the CLI's ``--restart``) or ``overwrite=True`` discards an
unfinished run.

A run holds an exclusive lock (``flock``) on ``OUTPUT.lock`` from start to end, so a second run on the
same output is refused instead of mixing its blocks in. The kernel drops the lock when the process
dies: a file left by a killed run blocks nothing. Write errors (a full disk, a folder that cannot be
written) are reported naming the output; after a full disk the partial store is kept for resume.

Memory
------
What a run holds does not depend on the volume's size: per worker, one block's slices (with halo) and
the network's activations for one block (about 200 MB for the test suite's tiny network at 512 + 2 x 128
px, more for bigger networks: lower ``chunk_yx`` or the workers to fit), plus the per-slice min/max and
one marker listing per gap. Tasks are handed to dask in bounded waves (threads) or a bounded window
(distributed), so the task graph does not grow with the volume either. glibc keeps freed memory in
per-thread arenas; ``MALLOC_ARENA_MAX=2`` shows the working set without that. dask.distributed's nanny
starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which makes torch's CPU forward pass about twice
as slow; on CPU clusters drop it from ``distributed.nanny.pre-spawn-environ``
(``benchmarks/big_volume.py`` measures both).

Format
------
OME-Zarr NGFF 0.4: a zarr v2 group with ``multiscales`` metadata (axes with types and units, a
``scale`` coordinate transformation holding the voxel size), ``/``-separated chunk keys, Blosc zstd
compression and one resolution level ``0``. Axes are a subsequence of TCZYX containing ZYX (NGFF
order: time, channel, then space). NGFF 0.5 (zarr v3, metadata under ``ome``) is read too. The output
keeps the axes, units, XY (and T, C) scales, ``omero`` channel metadata and translation of the input;
its z scale is the new spacing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import threading
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .atomic import atomic_write_text
from .baselines import BASELINES, interpolate_axial
from .data import normalize_pair
from .errors import InputError
from .io import (READABLE_DTYPES, SUPPORTED_DTYPES, TIFF_SUFFIXES, Stack, VoxelSize, _normalise_unit, read_stack,
                 unpack_stack)
from .nets import SIZE_MULTIPLE
from .predict import ModelInterpolator, ZPlan, _dyadic_depth, check_positions, to_dtype

try:
    import fcntl
except ImportError:  # Windows: no flock, so runs are not locked
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LargeInput",
    "create_ome_zarr",
    "open_large",
    "predict_large",
    "read_ome_zarr",
    "write_ome_zarr",
]

log = logging.getLogger(__name__)

NGFF_VERSION = "0.4"
#: NGFF axis order (time, channel, space); stored arrays use a subsequence of it containing ZYX.
NGFF_AXES = "TCZYX"
CANONICAL_AXES = "TZCYX"
_AXIS_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
_NGFF_UNITS = {"um": "micrometer", "nm": "nanometer", "mm": "millimeter", "cm": "centimeter", "m": "meter",
               "inch": "inch", "angstrom": "angstrom", "pm": "picometer"}
#: Slice pixels read at once by the min/max pass (a square of this side, aligned to the input's chunks).
STATS_BLOCK = 2048
PARTIAL_SUFFIX = ".partial"
WORK_DIR = ".zaugnet"
LOCK_SUFFIX = ".lock"
_MANIFEST_VERSION = 2
#: errno values of a write that failed for want of space (EFBIG: over the file size limit).
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_RESTART_HINT = "pass --restart to discard the partial output and start again"
#: Manifest entries as the resume-conflict message names them.
_SETTING_NAMES = {"input_fingerprint": "input data", "method": "method or model weights",
                  "positions_sha256": "positions"}


# ================================================================================== OME-Zarr
@dataclass(frozen=True)
class LargeInput:
    """A big input, opened lazily: what :func:`predict_large` reads.

    Attributes
    ----------
    path
        The OME-Zarr group or TIFF file.
    kind
        ``"ome-zarr"`` or ``"tiff"``.
    array_path
        The array read: ``path/<dataset>`` for OME-Zarr (its first, full-resolution dataset), the file for TIFF.
    axes
        Axes of the stored array (OME-Zarr: NGFF order, a subsequence of TCZYX; TIFF: canonical TZCYX).
    shape, dtype
        Of the stored array.
    voxel_size
        Z, Y, X size in ``voxel_size.unit`` (``""`` when the store names no unit).
    extra
        What the output copies: ``time`` (scale, unit), ``translation`` (per axis letter),
        ``omero`` and ``name``.
    tiff_axes
        The ``axes`` override a TIFF was read with.
    """

    path: Path
    kind: str
    array_path: Path
    axes: str
    shape: tuple[int, ...]
    dtype: np.dtype
    voxel_size: VoxelSize
    extra: dict[str, Any] = field(default_factory=dict)
    tiff_axes: str | None = None

    @property
    def n_z(self) -> int:
        """Number of z-slices."""
        return self.shape[self.axes.index("Z")]

    def size(self, axis: str) -> int:
        """Length of ``axis`` (1 when absent)."""
        return self.shape[self.axes.index(axis)] if axis in self.axes else 1


def open_large(path: str | Path, axes: str | None = None) -> LargeInput:
    """Open an OME-Zarr store (a folder) or a TIFF file (memory-mapped) for out-of-core prediction.

    Reads metadata only; for a TIFF it memory-maps the data (compressed TIFFs cannot be mapped and are
    read into memory, with a warning).

    Raises
    ------
    InputError
        Naming ``path``: missing, neither a zarr group nor a TIFF, no ``multiscales`` metadata, axes that
        are not a subsequence of TCZYX with ZYX, an unsupported dtype, or fewer than 2 z-slices.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist")
    if path.is_file() and path.name.lower().endswith(TIFF_SUFFIXES):
        return _open_tiff(path, axes)
    if not path.is_dir():
        raise InputError(path, "not an OME-Zarr store (a folder) or a TIFF file")
    if axes is not None:
        raise InputError("--axes", "applies to TIFF inputs; an OME-Zarr store names its axes")
    return _open_zarr(path)


def _open_tiff(path: Path, axes: str | None) -> LargeInput:
    stack = read_stack(path, axes, mmap=True, min_slices=2)
    if not _is_mapped(stack.data):
        warnings.warn(f"{path}: cannot be memory-mapped (compressed or scattered TIFF data), so it was read into "
                      "memory; convert it to OME-Zarr for out-of-core prediction", stacklevel=3)
    return LargeInput(path, "tiff", path, stack.axes, tuple(stack.data.shape), stack.data.dtype,
                      stack.voxel_size, {}, axes)


def _is_mapped(array: np.ndarray) -> bool:
    base: Any = array
    while base is not None:
        if isinstance(base, np.memmap) or type(base).__name__ == "mmap":
            return True
        base = getattr(base, "base", None)
    return False


def _open_zarr(path: Path) -> LargeInput:
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = group.attrs.asdict()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        try:
            zarr.open_array(str(path), mode="r")
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(path, f"not an OME-Zarr store (no zarr group here: {exc})") from None
        raise InputError(path, "is a bare zarr array, not an OME-Zarr group; the group above it holds the "
                               "'multiscales' metadata") from None
    multiscales = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    if not multiscales or not isinstance(multiscales, list) or not isinstance(multiscales[0], dict):
        raise InputError(path, "is a zarr group without OME-Zarr 'multiscales' metadata")
    ms = multiscales[0]
    datasets = ms.get("datasets")
    if not datasets or not isinstance(datasets[0], dict) or "path" not in datasets[0]:
        raise InputError(path, "OME-Zarr 'multiscales' lists no datasets")
    ds = datasets[0]
    try:
        array = zarr.open_array(str(path / ds["path"]), mode="r")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(path, f"OME-Zarr dataset {ds['path']!r} cannot be opened ({exc})") from None
    ndim = len(array.shape)
    letters, units = _ngff_axes(path, ms.get("axes"), ndim)
    dtype = np.dtype(array.dtype)
    if dtype.type not in READABLE_DTYPES:
        names = ", ".join(np.dtype(t).name for t in READABLE_DTYPES)
        raise InputError(path, f"has unsupported data type {dtype.name}; supported: {names}")
    scale = np.ones(ndim)
    translation = np.zeros(ndim)
    has_translation = False
    for transforms in (ds.get("coordinateTransformations") or [], ms.get("coordinateTransformations") or []):
        for tr in transforms:
            if tr.get("type") == "scale" and "scale" in tr:
                values = np.asarray(tr["scale"], dtype=float)
                if values.shape != (ndim,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
                    raise InputError(path, f"invalid OME-Zarr scale {tr['scale']} for {ndim} axes")
                translation = translation * values
                scale = scale * values
            elif tr.get("type") == "translation" and "translation" in tr:
                values = np.asarray(tr["translation"], dtype=float)
                if values.shape != (ndim,):
                    raise InputError(path, f"invalid OME-Zarr translation {tr['translation']} for {ndim} axes")
                translation = translation + values
                has_translation = True
    n_z = array.shape[letters.index("Z")]
    if n_z < 2:
        raise InputError(path, f"has {n_z} z-slice(s); at least 2 are needed")
    spatial = {a: (float(scale[letters.index(a)]), units.get(a)) for a in "ZYX"}
    known = {u for _, u in spatial.values() if u}
    if len(known) > 1:  # mixed units: convert to micrometres when possible (scale and translation)
        factors = {"nm": 1e-3, "um": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6, "angstrom": 1e-4, "pm": 1e-6}
        if all((u or "um") in factors for _, u in spatial.values()):
            for a, (_, u) in spatial.items():
                translation[letters.index(a)] *= factors[u or "um"]
            spatial = {a: (v * factors[u or "um"], "um") for a, (v, u) in spatial.items()}
            known = {"um"}
    unit = known.pop() if len(known) == 1 else ""
    voxel = VoxelSize(spatial["Z"][0], spatial["Y"][0], spatial["X"][0], unit)
    extra: dict[str, Any] = {"name": ms.get("name"), "omero": attrs.get("omero")}
    if "T" in letters:
        extra["time"] = (float(scale[letters.index("T")]), units.get("T"))
    if has_translation:
        extra["translation"] = {a: float(translation[letters.index(a)]) for a in letters}
    return LargeInput(path, "ome-zarr", path / ds["path"], letters, tuple(array.shape), dtype, voxel, extra)


def _ngff_axes(path: Path, axes: Any, ndim: int) -> tuple[str, dict[str, str | None]]:
    """Axis letters (from TCZYX) and units of an NGFF ``axes`` list (0.3 strings or 0.4+ dicts)."""
    if axes is None:
        if ndim == 5:  # NGFF 0.1 / 0.2: always 5D TCZYX
            return "TCZYX", {}
        raise InputError(path, f"OME-Zarr metadata has no 'axes' for a {ndim}D array")
    if not isinstance(axes, list) or len(axes) != ndim:
        raise InputError(path, f"OME-Zarr 'axes' ({axes}) do not match the {ndim}D array")
    letters, units = "", {}
    spaces = [a for a in axes if isinstance(a, dict) and a.get("type") == "space"]
    for axis in axes:
        info = axis if isinstance(axis, dict) else {"name": str(axis)}
        name = str(info.get("name", "")).upper()
        kind = info.get("type")
        if name not in NGFF_AXES:
            if kind == "time":
                name = "T"
            elif kind == "channel":
                name = "C"
            elif kind == "space" and len(spaces) == 3:
                name = "ZYX"[spaces.index(axis)]
        letters += name if name in NGFF_AXES else "?"
        if isinstance(info.get("unit"), str) and info["unit"].strip():
            units[name] = _normalise_unit(info["unit"])
    if "?" in letters or len(set(letters)) != len(letters) or not set("ZYX") <= set(letters):
        names = [a.get("name") if isinstance(a, dict) else a for a in axes]
        raise InputError(path, f"OME-Zarr axes {names} are not time/channel/z/y/x with z, y and x present")
    return letters, units


def _ngff_metadata(axes: str, voxel: VoxelSize, extra: dict[str, Any], *, dataset: str = "0",
                   z_translation_shift: float = 0.0) -> dict[str, Any]:
    """``multiscales`` (and ``omero``) attributes of a one-level NGFF 0.4 image."""
    unit = _NGFF_UNITS.get(_normalise_unit(voxel.unit)) if voxel.unit else None
    entries, scale = [], []
    for a in axes:
        entry: dict[str, Any] = {"name": a.lower(), "type": _AXIS_TYPES[a]}
        if a in "ZYX":
            value = getattr(voxel, a.lower())
            scale.append(float(value) if value else 1.0)
            if unit and value:
                entry["unit"] = unit
        elif a == "T":
            t_scale, t_unit = extra.get("time") or (1.0, None)
            scale.append(float(t_scale))
            if t_unit:
                entry["unit"] = {"s": "second", "ms": "millisecond", "min": "minute", "h": "hour"}.get(t_unit, t_unit)
        else:
            scale.append(1.0)
        entries.append(entry)
    transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
    translation = extra.get("translation")
    if translation is not None or z_translation_shift:
        values = [float((translation or {}).get(a, 0.0)) for a in axes]
        values[axes.index("Z")] += z_translation_shift
        transforms.append({"type": "translation", "translation": values})
    ms: dict[str, Any] = {"version": NGFF_VERSION, "axes": entries,
                          "datasets": [{"path": dataset, "coordinateTransformations": transforms}]}
    if extra.get("name"):
        ms["name"] = extra["name"]
    attrs: dict[str, Any] = {"multiscales": [ms]}
    if extra.get("omero"):
        attrs["omero"] = extra["omero"]
    return attrs


def _compressor(fast: bool = False) -> Any:
    from numcodecs import Blosc

    if fast:
        return Blosc(cname="lz4", clevel=1, shuffle=Blosc.SHUFFLE)
    return Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE)


def _create_array(path: Path, shape: Sequence[int], dtype: np.dtype, chunks: Sequence[int], *, fast: bool = False,
                  ) -> Any:
    """An empty zarr v2 array (``/`` chunk keys, Blosc); ``path`` is its folder."""
    import zarr

    return zarr.create_array(str(path), shape=tuple(int(s) for s in shape), chunks=tuple(int(c) for c in chunks),
                             dtype=np.dtype(dtype), zarr_format=2, compressors=_compressor(fast),
                             chunk_key_encoding={"name": "v2", "separator": "/"}, fill_value=0, overwrite=True)


def _default_chunks(axes: str, shape: Sequence[int], chunk_yx: int) -> tuple[int, ...]:
    return tuple(min(chunk_yx, s) if a in "YX" else 1 for a, s in zip(axes, shape))


def create_ome_zarr(path: str | Path, shape: Sequence[int], dtype: Any, axes: str = "ZYX",
                    voxel_size: VoxelSize | None = None, *, chunk_yx: int = 512, overwrite: bool = False,
                    extra: dict[str, Any] | None = None) -> Any:
    """Create an empty one-level OME-Zarr (NGFF 0.4) image and return its zarr array, to fill piece by piece.

    ``axes`` name the dimensions of ``shape`` and must already be in NGFF order (a subsequence of
    TCZYX containing ZYX). Chunks are one plane x ``chunk_yx`` x ``chunk_yx``.
    """
    import zarr

    path = Path(path)
    axes = axes.upper()
    if "".join(a for a in NGFF_AXES if a in axes) != axes or not set("ZYX") <= set(axes) or len(axes) != len(shape):
        raise InputError(path, f"axes {axes!r} must be a subsequence of TCZYX containing ZYX, one per dimension")
    if path.exists():
        if not overwrite:
            raise InputError(path, "exists; pass --overwrite to replace it")
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    array = _create_array(path / "0", shape, np.dtype(dtype), _default_chunks(axes, shape, chunk_yx))
    group.attrs.update(_ngff_metadata(axes, voxel_size or VoxelSize(), extra or {}))
    return array


def write_ome_zarr(path: str | Path, stack_or_data: Stack | np.ndarray, axes: str | None = None,
                   voxel_size: VoxelSize | None = None, *, chunk_yx: int = 512, overwrite: bool = False) -> Path:
    """Write an in-memory stack as a one-level OME-Zarr (NGFF 0.4) image, atomically (folder renamed at the end).

    Axes (default: the Stack's, or ZYX for 3D data) may be in any order of TZCYX letters; the store
    holds them in NGFF order.
    """
    path = Path(path)
    data, axes, voxel_size = unpack_stack(path, stack_or_data, axes, voxel_size)
    axes = axes.upper()
    if (len(axes) != data.ndim or set(axes) - set(NGFF_AXES) or len(set(axes)) != len(axes)
            or not set("ZYX") <= set(axes)):
        raise InputError(path, f"invalid axes {axes!r} for {data.ndim}D data")
    if np.dtype(data.dtype).type not in READABLE_DTYPES:
        raise InputError(path, f"has unsupported data type {data.dtype}")
    if path.exists() and not overwrite:
        raise InputError(path, "exists; pass --overwrite to replace it")
    order = "".join(a for a in NGFF_AXES if a in axes)
    data = data.transpose([axes.index(a) for a in order])
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        array = create_ome_zarr(tmp, data.shape, data.dtype, order, voxel_size, chunk_yx=chunk_yx)
        array[...] = data
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_ome_zarr(path: str | Path) -> Stack:
    """Read an OME-Zarr image's first dataset into memory, axes in the canonical TZCYX order (small data, tests)."""
    info = open_large(path)
    import zarr

    data = np.asarray(zarr.open_array(str(info.array_path), mode="r")[...])
    canon = "".join(a for a in CANONICAL_AXES if a in info.axes)
    return Stack(data.transpose([info.axes.index(a) for a in canon]), canon, info.voxel_size, Path(path))


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename folder ``src`` to ``dst``, replacing whatever ``dst`` was."""
    if dst.exists() or dst.is_symlink():
        trash = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(dst, trash)
        try:
            os.replace(src, dst)
        except OSError:  # put the old one back: never leave dst missing
            os.replace(trash, dst)
            raise
        shutil.rmtree(trash, ignore_errors=True) if trash.is_dir() else trash.unlink()
    else:
        os.replace(src, dst)


# ================================================================================== arrays in tasks
_OPEN: OrderedDict[tuple, Any] = OrderedDict()
_OPEN_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Array:
    """Where a task reads or writes, opened once per process (a small cache keyed also by the run's token)."""

    kind: str  # "zarr" or "tiff"
    path: str
    axes: str
    token: str
    tiff_axes: str | None = None
    writable: bool = False

    def open(self) -> Any:
        key = dataclasses.astuple(self)
        with _OPEN_LOCK:
            if key in _OPEN:
                _OPEN.move_to_end(key)
                return _OPEN[key]
        if self.kind == "zarr":
            import zarr

            array = zarr.open_array(self.path, mode="r+" if self.writable else "r")
        else:
            array = read_stack(self.path, self.tiff_axes, mmap=True, min_slices=2).data
        with _OPEN_LOCK:
            _OPEN[key] = array
            while len(_OPEN) > 16:
                _OPEN.popitem(last=False)
        return array

    def _key(self, t: int, c: int, z: slice, ys: slice, xs: slice) -> tuple:
        parts = {"T": t, "C": c, "Z": z, "Y": ys, "X": xs}
        return tuple(parts[a] for a in self.axes)

    def read(self, t: int, c: int, z: tuple[int, int], ys: tuple[int, int], xs: tuple[int, int]) -> np.ndarray:
        """``(z1 - z0, y1 - y0, x1 - x0)`` of volume ``(t, c)``, in the stored dtype."""
        return np.asarray(self.open()[self._key(t, c, slice(*z), slice(*ys), slice(*xs))])

    def write(self, t: int, c: int, z0: int, y0: int, x0: int, data: np.ndarray) -> None:
        n, h, w = data.shape
        self.open()[self._key(t, c, slice(z0, z0 + n), slice(y0, y0 + h), slice(x0, x0 + w))] = data


def _forget(token: str) -> None:
    with _OPEN_LOCK:
        for key in [k for k in _OPEN if k[3] == token]:
            del _OPEN[key]


class _ZWindow:
    """The slices ``z0 .. z0 + len(data) - 1`` of an ``n``-slice volume, indexed by global z.

    Lets :func:`.baselines.interpolate_axial` run on a few slices with the global positions, so its
    arithmetic (and result) is exactly the in-memory one.
    """

    def __init__(self, data: np.ndarray, z0: int, n: int) -> None:
        self.data, self.z0 = data, z0
        self.shape = (n, *data.shape[1:])

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self.data[int(index) - self.z0]
        return self.data[np.asarray(index) - self.z0]


# ================================================================================== tasks
@dataclass(frozen=True)
class _Pass:
    """What every block task of one pass needs (small: it travels with each task)."""

    number: int
    src: _Array
    dst: _Array
    n_src: int
    yx: tuple[int, int]
    chunk: int
    halo: int
    method: str  # "linear", "cubic" or "model"
    out_dtype: str | None  # None: float32 intermediate (no rounding)
    done_dir: str


@dataclass(frozen=True)
class _Gap:
    """The output slices ``k0 ..`` made from gap ``gap`` (input slices gap, gap + 1)."""

    gap: int
    k0: int
    positions: tuple[float, ...]  # global fractional positions
    fracs: tuple[float, ...]  # positions - gap, as in-memory


def _marker(done_dir: str, t: int, c: int, gap: int, by: int, bx: int) -> Path:
    return Path(done_dir) / f"t{t}c{c}g{gap}" / f"{by}_{bx}"


def _slice_minmax(_shared: Any, src: _Array, t: int, c: int, z: int, yx: tuple[int, int], step: tuple[int, int],
                  ) -> tuple[float, float]:
    """Min and max of slice ``z`` of volume ``(t, c)`` (as float32, like :func:`.data.normalize_pair`)."""
    lo, hi = math.inf, -math.inf
    for y0 in range(0, yx[0], step[0]):
        for x0 in range(0, yx[1], step[1]):
            block = src.read(t, c, (z, z + 1), (y0, min(y0 + step[0], yx[0])), (x0, min(x0 + step[1], yx[1])))
            b_lo, b_hi = float(np.float32(block.min())), float(np.float32(block.max()))
            if math.isnan(b_lo) or math.isnan(b_hi):  # (min() with a NaN would drop it)
                return math.nan, math.nan
            lo, hi = min(lo, b_lo), max(hi, b_hi)
    return lo, hi


def _pair_percentile(_shared: Any, src: _Array, t: int, c: int, gap: int, yx: tuple[int, int],
                     percentiles: tuple[float, float]) -> tuple[float, float]:
    """``(lo, scale)`` of a whole pair by joint percentiles (loads the two slices)."""
    pair = src.read(t, c, (gap, gap + 2), (0, yx[0]), (0, yx[1])).astype(np.float32)
    if not np.isfinite(pair).all():
        return math.nan, math.nan
    return normalize_pair(pair, "percentile", percentiles)


def _block_task(model: ModelInterpolator | None, job: _Pass, t: int, c: int, gap: _Gap,
                norm: tuple[float, float] | None, by: int, bx: int) -> int:
    """Compute, write and mark one block: every output slice of ``gap`` over XY block ``(by, bx)``."""
    h, w = job.yx
    y0, x0 = by * job.chunk, bx * job.chunk
    y1, x1 = min(y0 + job.chunk, h), min(x0 + job.chunk, w)
    pos = np.asarray(gap.positions, dtype=np.float64)
    frac = np.asarray(gap.fracs, dtype=np.float64)
    if job.method in BASELINES:
        z0, z1 = max(0, gap.gap - 1), min(job.n_src, gap.gap + 3)
        window = _ZWindow(job.src.read(t, c, (z0, z1), (y0, y1), (x0, x1)), z0, job.n_src)
        out = interpolate_axial(window, pos, job.method)  # type: ignore[arg-type]
    else:
        out = np.empty((len(pos), y1 - y0, x1 - x0), dtype=np.float32)
        exact = np.isclose(frac, 0, atol=1e-9) | np.isclose(frac, 1, atol=1e-9)
        for k in np.flatnonzero(exact):
            z = int(round(pos[k]))
            out[k] = job.src.read(t, c, (z, z + 1), (y0, y1), (x0, x1))[0]
        todo = np.flatnonzero(~exact)
        if len(todo):
            assert model is not None and norm is not None
            ry0 = max(0, y0 - job.halo) // SIZE_MULTIPLE * SIZE_MULTIPLE
            rx0 = max(0, x0 - job.halo) // SIZE_MULTIPLE * SIZE_MULTIPLE
            ry1, rx1 = min(h, y1 + job.halo), min(w, x1 + job.halo)
            pair = job.src.read(t, c, (gap.gap, gap.gap + 2), (ry0, ry1), (rx0, rx1)).astype(np.float32)
            lo, scale = norm
            first = (pair[0] - lo) / scale  # as ModelInterpolator.predict, with the whole pair's range
            second = (pair[1] - lo) / scale
            shape = (len(todo), *first.shape)
            pred = model.predict(np.broadcast_to(first, shape), np.broadcast_to(second, shape), frac[todo])
            pred = pred[:, y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0]
            out[todo] = pred * scale + lo
    data = out if job.out_dtype is None else to_dtype(out, np.dtype(job.out_dtype))
    job.dst.write(t, c, gap.k0, y0, x0, data)
    marker = _marker(job.done_dir, t, c, gap.gap, by, bx)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return len(pos)


# ================================================================================== execution
class _Executor:
    """Runs ``fn(shared, *args)`` for many argument tuples with dask (threads, synchronous, or a Client)."""

    def __init__(self, scheduler: str, client: Any, num_workers: int | None) -> None:
        self.scheduler, self.client = scheduler, client
        self.num_workers = num_workers or (os.cpu_count() or 1)

    @property
    def workers(self) -> int:
        if self.client is not None:
            return max(1, sum(self.client.nthreads().values()))
        return 1 if self.scheduler == "synchronous" else self.num_workers

    def share(self, obj: Any) -> Any:
        """``obj`` as tasks will receive it (scattered once to a cluster's workers)."""
        if self.client is None or obj is None:
            return obj
        return self.client.scatter(obj, broadcast=True, hash=False)

    def run(self, fn: Callable[..., Any], shared: Any, calls: Iterable[tuple], bar: tqdm | None, *,
            collect: bool = True) -> list[Any]:
        """Results in the order of ``calls`` (none kept with ``collect=False``)."""
        if self.client is not None:
            return self._run_distributed(fn, shared, calls, bar, collect)
        import dask
        from dask.callbacks import Callback

        results: list[Any] = []
        wave = max(64, 16 * self.workers)
        calls = iter(calls)
        task = dask.delayed(_call_packed, pure=False)
        with Callback(posttask=lambda *_: bar.update(1) if bar is not None else None):
            while True:
                batch = [task(_Packed(fn, shared, args)) for args in _take(calls, wave)]
                if not batch:
                    return results
                kwargs = {} if self.scheduler == "synchronous" else {"num_workers": self.num_workers}
                done = dask.compute(*batch, scheduler=self.scheduler, **kwargs)
                if collect:
                    results.extend(done)

    def _run_distributed(self, fn: Callable[..., Any], shared: Any, calls: Iterable[tuple], bar: tqdm | None,
                         collect: bool) -> list[Any]:
        from distributed import as_completed

        calls = enumerate(calls)
        limit = max(16, 4 * self.workers)
        results: dict[int, Any] = {}
        index: dict[Any, int] = {}

        def submit(n: int) -> list[Any]:
            futures = []
            for i, args in _take(calls, n):
                future = self.client.submit(fn, shared, *args, pure=False)
                index[future] = i
                futures.append(future)
            return futures

        pending = as_completed(submit(limit))
        for future in pending:
            i = index.pop(future)
            value = future.result()
            if collect:
                results[i] = value
            future.release()
            if bar is not None:
                bar.update(1)
            for new in submit(1):
                pending.add(new)
        return [results[i] for i in range(len(results))]


class _Packed:
    """A task's function and arguments in one object dask does not look into (no traversal of dataclasses)."""

    __slots__ = ("fn", "shared", "args")

    def __init__(self, fn: Callable[..., Any], shared: Any, args: tuple) -> None:
        self.fn, self.shared, self.args = fn, shared, args


def _call_packed(packed: _Packed) -> Any:
    return packed.fn(packed.shared, *packed.args)


def _take(iterator: Iterator[Any], n: int) -> list[Any]:
    out = []
    for item in iterator:
        out.append(item)
        if len(out) == n:
            break
    return out


@contextlib.contextmanager
def _torch_threads(model: ModelInterpolator | None, executor: _Executor) -> Iterator[None]:
    """Share the CPU cores between threaded workers: ``cores // workers`` torch threads each."""
    if model is None or executor.client is not None or not str(model.device).startswith("cpu"):
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, before // executor.workers))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ================================================================================== predict_large
def _model_digest(model: ModelInterpolator) -> dict[str, Any]:
    """What identifies ``model`` for resume; its ``weights_sha256`` is ``""`` when nothing identifies the weights.

    The weights are identified by ``model.weights_sha256`` (the weights file's hash) when set, else by the
    bytes of the network's ``state_dict``.
    """
    weights = model.weights_sha256
    state = getattr(model.network, "state_dict", None)
    if not weights and callable(state):
        digest = hashlib.sha256()
        for name, tensor in state().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        weights = digest.hexdigest()
    return {"variant": model.variant, "name": model.name, "normalization": model.normalization,
            "percentiles": list(model.percentiles), "weights_sha256": weights}


def _input_fingerprint(info: LargeInput) -> dict[str, Any]:
    """Hash of the name, size and modification time of every file of the input array.

    The TIFF file, or every metadata and chunk file of the zarr array: data rewritten between two runs
    changes it. It costs one ``stat`` per file and reads no data; folders are listed one at a time, so
    memory does not grow with the volume.
    """
    root = info.array_path
    tree: Iterable[tuple[str, list[str], list[str]]] = (
        [(str(root.parent), [], [root.name])] if root.is_file() else os.walk(root))
    digest, count = hashlib.sha256(), 0
    for folder, dirs, names in tree:
        dirs.sort()  # a fixed order
        for name in sorted(names):
            path = os.path.join(folder, name)
            stat = os.stat(path)
            digest.update(f"{os.path.relpath(path, root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            count += 1
    return {"files": count, "stat_sha256": digest.hexdigest()}


@contextlib.contextmanager
def _exclusive(output: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``OUTPUT.lock`` (the kernel drops it if the process dies); removed at the end.

    Raises
    ------
    InputError
        Naming ``output`` when another run holds the lock.
    """
    lock = output.with_name(output.name + LOCK_SUFFIX)
    fd = _acquire(lock, output) if fcntl is not None else None
    try:
        yield
    finally:
        if fd is not None:
            lock.unlink(missing_ok=True)
            os.close(fd)


def _acquire(lock: Path, output: Path) -> int | None:
    """A descriptor of ``lock`` holding its exclusive flock; None (and a warning) where the file system has no locks."""
    if not lock.parent.exists():  # (a file in the way fails below, with "Not a directory")
        lock.parent.mkdir(parents=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if isinstance(exc, BlockingIOError):
                raise InputError(output, f"another zaugnet run is writing it (it holds {lock}); wait for that run "
                                         "to finish, or stop it and run again") from None
            if exc.errno not in (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            warnings.warn(f"{lock}: this file system cannot lock files ({exc.strerror}); make sure no other run "
                          f"writes {output} at the same time", stacklevel=5)
            return None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the previous holder removed the file as we opened it: lock the new one


@contextlib.contextmanager
def _output_errors(output: Path, partial: Path, input_path: Path) -> Iterator[None]:
    """Turn an ``OSError`` while making ``output`` into an :class:`InputError` naming it.

    A full disk (ENOSPC, EDQUOT, EFBIG) says that ``partial`` is kept for resume. Errors on the input's
    own files pass unchanged.
    """
    try:
        yield
    except OSError as exc:
        name = exc.filename
        if isinstance(name, (str, bytes)) and Path(os.fsdecode(name)).resolve().is_relative_to(input_path.resolve()):
            raise
        if exc.errno in _NO_SPACE:
            kept = (f"; the unfinished output {partial} is kept: free some space and run the same command again "
                    "to resume" if (partial / WORK_DIR / "manifest.json").exists() else "; free some space")
            raise InputError(output, f"no space left on device ({exc.strerror}){kept}") from exc
        raise InputError(output, f"cannot write {name or output} ({exc.strerror})") from exc


def _passes_positions(positions: np.ndarray, n: int, model: ModelInterpolator | None) -> list[np.ndarray]:
    """Positions of each pass (into that pass's input); several only for a midpoint model."""
    if model is None or not model.midpoint_only:
        return [positions]
    k = _dyadic_depth(positions)
    if k is None:
        raise InputError("--model", f"{model.name} predicts only midpoints (z = 0.5), so it serves factors 2, 4, 8, "
                                    "...; use a ZAugNet+ model (or --method cubic) for other factors or positions")
    if k == 0:
        return [np.round(positions)]
    out = []
    size = n
    for _ in range(k - 1):  # full doublings
        out.append(np.arange(2 * size - 1) / 2.0)
        size = 2 * size - 1
    out.append(np.round(positions * 2**k) / 2.0)  # the last pass: only the slices asked for
    return out


def _gaps(positions: np.ndarray, n_src: int) -> list[_Gap]:
    base = np.minimum(np.floor(positions).astype(int), n_src - 2)
    frac = positions - base
    gaps = []
    for g in np.unique(base):
        ks = np.flatnonzero(base == g)
        gaps.append(_Gap(int(g), int(ks[0]), tuple(float(p) for p in positions[ks]),
                         tuple(float(f) for f in frac[ks])))
    return gaps


def predict_large(input: str | Path, output: str | Path, plan: ZPlan, method: str | ModelInterpolator, *,
                  chunk_yx: int = 512, halo: int | None = None, scheduler: str = "threads", client: Any = None,
                  num_workers: int | None = None, progress: bool = True, resume: bool = True,
                  restart: bool = False, overwrite: bool = False, axes: str | None = None) -> Path:
    """Z-augment a volume larger than memory block by block: OME-Zarr or TIFF in, OME-Zarr (NGFF 0.4) out.

    Parameters
    ----------
    input
        An OME-Zarr store (folder) or a TIFF file (memory-mapped).
    output
        The OME-Zarr store to write (a name ending in ``.zarr``, e.g. ``out.ome.zarr``). Built in
        ``OUTPUT.partial`` and renamed when complete.
    plan
        Output positions and z spacing, from :func:`.predict.make_plan` with ``open_large(input).n_z``
        and ``.voxel_size.z``.
    method
        ``"linear"``, ``"cubic"`` or a :class:`.predict.ModelInterpolator` (ZAugNet: factors 2^k, in k
        passes; ZAugNet+: any plan).
    chunk_yx
        Side of the XY blocks and of the output chunks (a multiple of 16).
    halo
        Context read around each block for a model (default: the model's own ``halo``, 128).
    scheduler
        ``"threads"`` (dask's threaded scheduler, ``num_workers`` threads, default one per core) or
        ``"synchronous"`` (one at a time, for debugging). Ignored when ``client`` is given.
    client
        A ``dask.distributed.Client``: tasks run on its workers, which must see ``input`` and ``output``.
    progress
        Show progress bars (tqdm) and say how much of an interrupted run is reused.
    resume
        Continue an interrupted run found in ``OUTPUT.partial`` (same input data, settings and model
        weights required); False is the same as ``restart=True``.
    restart
        Discard an interrupted run found in ``OUTPUT.partial`` and start over (the CLI's ``--restart``).
    overwrite
        Replace an existing ``output`` (only once the new one is complete); discards ``OUTPUT.partial`` too.
    axes
        Axes of a TIFF without axis metadata (e.g. ``TZYX``).

    Returns
    -------
    Path
        ``output``.

    Raises
    ------
    InputError
        Naming the file or option: a bad input (see :func:`open_large`), an output that exists or is not
        ``.zarr``, bad positions, chunk or halo, an unknown method or scheduler, a midpoint-only model
        asked for non-dyadic positions, an unfinished run with other settings or input data (or made with
        a model that nothing identifies), NaN/inf in the input, another run writing ``output``, a full
        disk or an output that cannot be written.
    """
    info = open_large(input, axes)
    output = Path(output)
    if not output.name.lower().endswith(".zarr"):
        raise InputError(output, "out-of-core output is an OME-Zarr store; name it *.zarr (e.g. out.ome.zarr)")
    if output.resolve() == info.path.resolve():
        raise InputError(output, "is the input; choose another output (inputs are never overwritten)")
    if not isinstance(chunk_yx, int) or chunk_yx <= 0 or chunk_yx % SIZE_MULTIPLE:
        raise InputError("--tile", f"must be a positive multiple of {SIZE_MULTIPLE}, got {chunk_yx}")
    model = method if isinstance(method, ModelInterpolator) else None
    if model is not None and model.n_slices != 2:
        raise InputError("--model", f"{model.name} takes {model.n_slices} slices per gap; out-of-core (OME-Zarr) "
                                    "prediction serves two-slice models (ZAugNet, ZAugNet+) for now: write a TIFF")
    if model is None and method not in BASELINES:
        raise InputError("--method", f"unknown method {method!r}; choose from {', '.join(BASELINES)}")
    halo = (model.halo if model is not None else 0) if halo is None else halo
    if not isinstance(halo, int) or halo < 0:
        raise InputError("--halo", f"must be zero or positive, got {halo}")
    if client is None and scheduler not in ("threads", "synchronous"):
        raise InputError("scheduler", f"must be 'threads' or 'synchronous' (or pass a dask.distributed Client), "
                                      f"got {scheduler!r}")
    positions = check_positions(plan.positions, info.n_z)
    pass_positions = _passes_positions(positions, info.n_z, model)
    if model is not None and model.normalization == "none" and any(len(p) for p in pass_positions):
        warnings.warn(f"{model.name}: the network normalises its input itself, so out of core it sees one "
                      f"{chunk_yx} px block (plus halo) at a time, not the whole slice", stacklevel=2)

    out_axes = "".join(a for a in NGFF_AXES if a in info.axes)
    out_dtype = info.dtype if info.dtype.type in SUPPORTED_DTYPES else np.dtype(np.float32)
    h, w = info.size("Y"), info.size("X")
    n_t, n_c = info.size("T"), info.size("C")
    manifest = {
        "version": _MANIFEST_VERSION, "input": str(info.path.resolve()), "input_shape": list(info.shape),
        "input_dtype": info.dtype.name, "input_fingerprint": _input_fingerprint(info),
        "positions_sha256": hashlib.sha256(np.ascontiguousarray(positions).tobytes()).hexdigest(),
        "n_positions": int(len(positions)), "method": _model_digest(model) if model is not None else method,
        "chunk_yx": chunk_yx, "halo": halo, "passes": len(pass_positions),
    }
    partial = output.with_name(output.name + PARTIAL_SUFFIX)
    work = partial / WORK_DIR
    with _output_errors(output, partial, info.path), _exclusive(output):
        if output.exists() and not overwrite:
            raise InputError(output, "exists; pass --overwrite to replace it")
        resumed = _prepare_partial(partial, work, manifest, fresh=restart or overwrite or not resume)
        if not resumed:
            _create_output(partial, work, info, out_axes, out_dtype, positions, plan, chunk_yx, manifest, model,
                           method)

        token = uuid.uuid4().hex
        executor = _Executor(scheduler, client, num_workers)
        src = _Array("zarr" if info.kind == "ome-zarr" else "tiff", str(info.array_path), info.axes, token,
                     info.tiff_axes)
        n_src = info.n_z
        shared_model = None
        inner = None
        if model is not None:  # whole-pair normalisation is done by the tasks; the network sees one block untiled
            big = -(-(chunk_yx + 2 * halo + SIZE_MULTIPLE) // SIZE_MULTIPLE) * SIZE_MULTIPLE
            inner = dataclasses.replace(model, normalization="none", tile=big, halo=0)
        try:
            with _torch_threads(model, executor):
                for number, pos in enumerate(pass_positions, start=1):
                    last = number == len(pass_positions)
                    dst_path = partial / "0" if last else work / f"pass{number}.zarr"
                    dst = _Array("zarr", str(dst_path), out_axes, token, writable=True)
                    if not last and not dst_path.exists():
                        shape = [len(pos) if a == "Z" else info.size(a) for a in out_axes]
                        chunks = _default_chunks(out_axes, shape, chunk_yx)
                        _create_array(dst_path, shape, np.float32, chunks, fast=True)
                    job = _Pass(number, src, dst, n_src, (h, w), chunk_yx, halo,
                                "model" if model is not None else str(method),
                                None if not last else out_dtype.name, str(work / "done" / f"p{number}"))
                    if shared_model is None and inner is not None:
                        shared_model = executor.share(inner)
                    _run_pass(job, pos, len(pass_positions), n_t, n_c, model, shared_model, executor, work, info.path,
                              progress)
                    if number > 1:  # the previous intermediate is no longer needed
                        shutil.rmtree(work / f"pass{number - 1}.zarr", ignore_errors=True)
                    src, n_src = dst, len(pos)
        except InputError:  # a bad input (NaN / inf found by the first pass): nothing worth resuming
            shutil.rmtree(partial, ignore_errors=True)
            raise
        finally:
            _forget(token)
        _finish(partial, work, output, resumed)
    return output


def _prepare_partial(partial: Path, work: Path, manifest: dict[str, Any], fresh: bool) -> bool:
    """True if the unfinished run in ``partial`` is continued; removes it when the run starts over.

    Raises
    ------
    InputError
        Unless ``fresh``: when it was made with other settings or input data, or with a model that
        nothing identifies (it might have been another one).
    """
    if not partial.exists():
        return False
    previous = None if fresh else _read_manifest(work / "manifest.json")
    if previous is not None:
        current = json.loads(json.dumps(manifest))
        changed = [_SETTING_NAMES.get(k, k) for k in sorted(current) if previous.get(k) != current[k]]
        unknown_model = isinstance(current["method"], dict) and not current["method"]["weights_sha256"]
        if not changed and not unknown_model:
            return True
        reason = (f"other settings ({', '.join(changed)})" if changed else
                  "a model that nothing identifies (no weights_sha256 and no state_dict), so it may not be this one")
        raise InputError(partial, f"holds an unfinished run with {reason}; {_RESTART_HINT}")
    shutil.rmtree(partial)  # asked to, or no manifest: its creation was interrupted
    return False


def _read_manifest(path: Path) -> dict[str, Any] | None:
    """The saved manifest, or None when there is none (or it cannot be read)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def _create_output(partial: Path, work: Path, info: LargeInput, out_axes: str, out_dtype: np.dtype,
                   positions: np.ndarray, plan: ZPlan, chunk_yx: int, manifest: dict[str, Any],
                   model: ModelInterpolator | None, method: Any) -> None:
    import zarr

    shape = [len(positions) if a == "Z" else info.size(a) for a in out_axes]
    group = zarr.open_group(str(partial), mode="w", zarr_format=2)
    _create_array(partial / "0", shape, out_dtype, _default_chunks(out_axes, shape, chunk_yx))
    vs = info.voxel_size
    z_in = vs.z or 1.0
    if plan.z_spacing:
        z_out = float(plan.z_spacing)
    else:
        z_out = z_in * float(positions[-1] - positions[0]) / max(1, len(positions) - 1) if len(positions) > 1 else z_in
    voxel = VoxelSize(z_out, vs.y, vs.x, vs.unit)
    attrs = _ngff_metadata(out_axes, voxel, info.extra, z_translation_shift=float(positions[0]) * z_in)
    attrs["zaugnet"] = {"input": str(info.path), "method": model.name if model is not None else str(method),
                        "positions": [float(p) for p in positions] if len(positions) <= 10000 else None,
                        "note": plan.note}
    group.attrs.update(attrs)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(work / "manifest.json", json.dumps(manifest, indent=1))  # last: the store is ready


def _run_pass(job: _Pass, positions: np.ndarray, n_passes: int, n_t: int, n_c: int, model: ModelInterpolator | None,
              shared_model: Any, executor: _Executor, work: Path, input_path: Path, progress: bool) -> None:
    h, w = job.yx
    gaps = _gaps(positions, job.n_src)
    n_by, n_bx = -(-h // job.chunk), -(-w // job.chunk)
    label = f"pass {job.number}/{n_passes}: " if n_passes > 1 else ""
    needs_norm = model is not None and any(
        not (np.isclose(f, 0, atol=1e-9) or np.isclose(f, 1, atol=1e-9)) for g in gaps for f in g.fracs)
    norms: dict[tuple[int, int, int], tuple[float, float]] = {}
    if needs_norm:
        norms = _pair_ranges(job, gaps, n_t, n_c, model, executor, work, input_path, progress, label)

    done_dir = Path(job.done_dir)
    total = n_t * n_c * len(gaps) * n_by * n_bx
    reused = sum(len(os.listdir(sub)) for sub in done_dir.iterdir()) if done_dir.exists() else 0
    if reused:
        message = f"resuming {done_dir.parents[2]}: {label}{reused} of {total} blocks already done"
        log.info(message)
        if progress:
            print(message, file=sys.stderr)

    def calls() -> Iterator[tuple]:  # lazily, one gap's markers at a time: memory does not grow with the volume
        for t in range(n_t):
            for c in range(n_c):
                for g in gaps:
                    folder = _marker(job.done_dir, t, c, g.gap, 0, 0).parent
                    finished = set(os.listdir(folder)) if folder.exists() else set()
                    for by in range(n_by):
                        for bx in range(n_bx):
                            if f"{by}_{bx}" not in finished:
                                yield job, t, c, g, norms.get((t, c, g.gap)), by, bx

    with tqdm(total=total, initial=reused, desc=f"{label}blocks", unit="block", disable=not progress,
              leave=False) as bar:
        executor.run(_block_task_entry, shared_model, calls(), bar, collect=False)
    log.info("%scomputed %d blocks (%d reused)", label, total - reused, reused)


def _block_task_entry(model: Any, *args: Any) -> int:
    # looked up at call time so tests can wrap _block_task (e.g. to kill the process after N blocks)
    return _block_task(model, *args)


def _pair_ranges(job: _Pass, gaps: list[_Gap], n_t: int, n_c: int, model: ModelInterpolator, executor: _Executor,
                 work: Path, input_path: Path, progress: bool, label: str,
                 ) -> dict[tuple[int, int, int], tuple[float, float]]:
    """``(lo, scale)`` of every pair the model sees, from a first pass over whole slices (saved for resume)."""
    h, w = job.yx
    cache = work / f"ranges_p{job.number}.json"
    if cache.exists():
        return {tuple(k): tuple(v) for k, v in json.loads(cache.read_text())}  # type: ignore[misc]
    todo_gaps = [g for g in gaps if any(not (np.isclose(f, 0, atol=1e-9) or np.isclose(f, 1, atol=1e-9))
                                        for f in g.fracs)]
    ranges: dict[tuple[int, int, int], tuple[float, float]] = {}
    if model.normalization == "minmax":
        chunks = getattr(job.src.open(), "chunks", None)
        step = tuple(_stats_step(chunks[job.src.axes.index(a)] if chunks else 1, n) for a, n in zip("YX", (h, w)))
        slices = sorted({z for g in todo_gaps for z in (g.gap, g.gap + 1)})
        calls = [(job.src, t, c, z, (h, w), step) for t in range(n_t) for c in range(n_c) for z in slices]
        with tqdm(total=len(calls), desc=f"{label}min/max", unit="slice", disable=not progress, leave=False) as bar:
            results = executor.run(_slice_minmax, None, calls, bar)
        stats = {call[1:4]: r for call, r in zip(calls, results)}
        for t in range(n_t):
            for c in range(n_c):
                for g in todo_gaps:
                    (lo0, hi0), (lo1, hi1) = stats[(t, c, g.gap)], stats[(t, c, g.gap + 1)]
                    lo, hi = min(lo0, lo1), max(hi0, hi1)
                    if not (math.isfinite(lo) and math.isfinite(hi)):
                        raise InputError(input_path, "contains NaN or infinite values")
                    ranges[(t, c, g.gap)] = normalize_pair(np.array([lo, hi], dtype=np.float32), "minmax")
    elif model.normalization == "percentile":
        calls = [(job.src, t, c, g.gap, (h, w), tuple(model.percentiles)) for t in range(n_t) for c in range(n_c)
                 for g in todo_gaps]
        with tqdm(total=len(calls), desc=f"{label}percentiles", unit="pair", disable=not progress,
                  leave=False) as bar:
            results = executor.run(_pair_percentile, None, calls, bar)
        for call, r in zip(calls, results):
            if not all(math.isfinite(v) for v in r):
                raise InputError(input_path, "contains NaN or infinite values")
            ranges[(call[1], call[2], call[3])] = (float(r[0]), float(r[1]))
    else:  # "none": the network normalises; identity here
        ranges = {(t, c, g.gap): (0.0, 1.0) for t in range(n_t) for c in range(n_c) for g in todo_gaps}
    atomic_write_text(cache, json.dumps([[list(k), list(v)] for k, v in ranges.items()]))
    return ranges


def _stats_step(chunk: int, size: int) -> int:
    """Block side for the min/max pass: whole input chunks, about :data:`STATS_BLOCK` pixels."""
    chunk = max(1, int(chunk))
    return min(size, max(chunk, STATS_BLOCK // chunk * chunk))


def _finish(partial: Path, work: Path, output: Path, resumed: bool) -> None:
    if resumed:  # a killed chunk write can leave zarr's temporary file behind
        for root, _, files in os.walk(partial / "0"):
            for name in files:
                if name.endswith(".partial"):
                    Path(root, name).unlink(missing_ok=True)
    shutil.rmtree(work)
    _replace_dir(partial, output)
