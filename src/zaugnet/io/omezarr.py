"""OME-Zarr images, and memory-mapped TIFFs, for volumes larger than memory.

:func:`open_large` opens an input lazily (metadata only; a TIFF is memory-mapped) as a :class:`LargeInput`;
:func:`create_ome_zarr` makes an empty image to fill piece by piece, :func:`write_ome_zarr` and
:func:`read_ome_zarr` write and read small ones whole. :class:`ArrayRef` names a stored array that worker
tasks open once per process and read or write region by region.

Format
------
OME-Zarr NGFF 0.4: a zarr v2 group with ``multiscales`` metadata (axes with types and units, a
``scale`` coordinate transformation holding the voxel size), ``/``-separated chunk keys, Blosc zstd
compression and one resolution level ``0``. Axes are a subsequence of TCZYX containing ZYX (NGFF
order: time, channel, then space). NGFF 0.5 (zarr v3, metadata under ``ome``) is read too; NGFF
0.1 / 0.2 stores without ``axes`` are read as TCZYX. Length units go through :mod:`.units` (mixed
spatial units are converted to micrometres). An image written from an input keeps its axes, units, XY
(and T, C) scales, ``omero`` channel metadata and translation.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .tiff import CANONICAL_AXES, READABLE_DTYPES, TIFF_SUFFIXES, Stack, VoxelSize, read_stack, unpack_stack
from .units import ngff_unit, normalise_unit, size_in_um

__all__ = [
    "CANONICAL_AXES",
    "NGFF_AXES",
    "NGFF_VERSION",
    "ArrayRef",
    "LargeInput",
    "create_array",
    "create_ome_zarr",
    "default_chunks",
    "forget_arrays",
    "open_large",
    "read_ome_zarr",
    "replace_dir",
    "write_ome_zarr",
]

NGFF_VERSION = "0.4"
#: NGFF axis order (time, channel, space); stored arrays use a subsequence of it containing ZYX.
NGFF_AXES = "TCZYX"
_AXIS_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
#: Time units as NGFF names them.
_NGFF_TIME_UNITS = {"s": "second", "ms": "millisecond", "min": "minute", "h": "hour"}
#: Arrays an :class:`ArrayRef` keeps open per process.
_CACHE_SIZE = 16
_ZARR_ERRORS = (OSError, ValueError, KeyError, TypeError)


@dataclass(frozen=True)
class LargeInput:
    """A big input, opened lazily.

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
        What an image made from this one copies: ``time`` (scale, unit), ``translation`` (per axis
        letter), ``omero`` and ``name``.
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

    def ref(self, token: str) -> ArrayRef:
        """The stored array as tasks of the run ``token`` read it (see :class:`ArrayRef`)."""
        return ArrayRef("zarr" if self.kind == "ome-zarr" else "tiff", str(self.array_path), self.axes, token,
                        self.tiff_axes)


def open_large(path: str | Path, axes: str | None = None) -> LargeInput:
    """Open an OME-Zarr store (a folder) or a TIFF file (memory-mapped) without reading its data.

    Compressed TIFFs cannot be mapped and are read into memory, with a warning.

    Raises
    ------
    InputError
        Naming ``path``: missing, neither a zarr group nor a TIFF, no ``multiscales`` metadata, axes that
        are not a subsequence of TCZYX with ZYX, an unsupported dtype, or fewer than 2 z-slices; naming
        ``--axes`` when given for an OME-Zarr store.
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
    """Whether ``array`` is a view of a memory map."""
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
    except _ZARR_ERRORS as exc:
        try:
            zarr.open_array(str(path), mode="r")
        except _ZARR_ERRORS:
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
    except _ZARR_ERRORS as exc:
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
    if len(known) > 1:  # mixed units: convert to micrometres when all are lengths (scale and translation)
        factors = {u: size_in_um(u) for u in {u or "um" for _, u in spatial.values()}}
        if all(f is not None for f in factors.values()):
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
            units[name] = normalise_unit(info["unit"])
    if "?" in letters or len(set(letters)) != len(letters) or not set("ZYX") <= set(letters):
        names = [a.get("name") if isinstance(a, dict) else a for a in axes]
        raise InputError(path, f"OME-Zarr axes {names} are not time/channel/z/y/x with z, y and x present")
    return letters, units


def _ngff_metadata(axes: str, voxel: VoxelSize, extra: dict[str, Any], *, dataset: str = "0",
                   z_offset: float = 0.0) -> dict[str, Any]:
    """``multiscales`` (and ``omero``) attributes of a one-level NGFF 0.4 image."""
    unit = ngff_unit(voxel.unit) if voxel.unit else None
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
                entry["unit"] = _NGFF_TIME_UNITS.get(t_unit, t_unit)
        else:
            scale.append(1.0)
        entries.append(entry)
    transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
    translation = extra.get("translation")
    if translation is not None or z_offset:
        values = [float((translation or {}).get(a, 0.0)) for a in axes]
        values[axes.index("Z")] += z_offset
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


def create_array(path: str | Path, shape: Sequence[int], dtype: Any, chunks: Sequence[int], *,
                 fast: bool = False) -> Any:
    """An empty zarr v2 array (``/`` chunk keys, Blosc zstd; ``fast``: lz4, for scratch data) in folder ``path``.

    Replaces whatever array ``path`` held; unwritten chunks read as 0.
    """
    import zarr

    return zarr.create_array(str(path), shape=tuple(int(s) for s in shape), chunks=tuple(int(c) for c in chunks),
                             dtype=np.dtype(dtype), zarr_format=2, compressors=_compressor(fast),
                             chunk_key_encoding={"name": "v2", "separator": "/"}, fill_value=0, overwrite=True)


def default_chunks(axes: str, shape: Sequence[int], chunk_yx: int) -> tuple[int, ...]:
    """Chunks of one plane (1 along T, C, Z) by ``chunk_yx`` x ``chunk_yx`` (at most the image) for ``shape``."""
    return tuple(min(chunk_yx, s) if a in "YX" else 1 for a, s in zip(axes, shape))


def create_ome_zarr(path: str | Path, shape: Sequence[int], dtype: Any, axes: str = "ZYX",
                    voxel_size: VoxelSize | None = None, *, chunk_yx: int = 512, overwrite: bool = False,
                    extra: dict[str, Any] | None = None, z_offset: float = 0.0,
                    attributes: dict[str, Any] | None = None) -> Any:
    """Create an empty one-level OME-Zarr (NGFF 0.4) image and return its zarr array, to fill piece by piece.

    ``axes`` name the dimensions of ``shape`` and must already be in NGFF order (a subsequence of
    TCZYX containing ZYX). Chunks are one plane x ``chunk_yx`` x ``chunk_yx``. ``extra`` is what
    :class:`LargeInput` carries over from an input (time scale, translation, ``omero``, name);
    ``z_offset`` (in the voxel size's unit) is added to the z translation; ``attributes`` are further
    group attributes (e.g. provenance).

    Raises
    ------
    InputError
        Naming ``path``: axes that are not in NGFF order, or a ``path`` that exists (unless ``overwrite``).
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
    array = create_array(path / "0", shape, np.dtype(dtype), default_chunks(axes, shape, chunk_yx))
    group.attrs.update({**_ngff_metadata(axes, voxel_size or VoxelSize(), extra or {}, z_offset=z_offset),
                        **(attributes or {})})
    return array


def write_ome_zarr(path: str | Path, stack_or_data: Stack | np.ndarray, axes: str | None = None,
                   voxel_size: VoxelSize | None = None, *, chunk_yx: int = 512, overwrite: bool = False) -> Path:
    """Write an in-memory stack as a one-level OME-Zarr (NGFF 0.4) image, atomically (folder renamed at the end).

    Axes (default: the Stack's, or ZYX for 3D data) may be in any order of TZCYX letters; the store
    holds them in NGFF order.

    Raises
    ------
    InputError
        Naming ``path``: invalid axes, an unsupported dtype, or a ``path`` that exists (unless ``overwrite``).
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
        replace_dir(tmp, path)
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


def replace_dir(src: str | Path, dst: str | Path) -> None:
    """Rename folder ``src`` to ``dst``, replacing whatever ``dst`` was (``dst`` is never left missing)."""
    src, dst = Path(src), Path(dst)
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


# ---------------------------------------------------------------------------------- arrays in tasks
_OPEN: OrderedDict[tuple, Any] = OrderedDict()
_OPEN_LOCK = threading.Lock()


@dataclass(frozen=True)
class ArrayRef:
    """A stored array named by its path (small, so it travels with each task), opened once per process.

    Open arrays are kept in a small per-process cache keyed by all fields, ``token`` included (one per
    run: :func:`forget_arrays` drops a run's arrays). Regions are addressed by volume ``(t, c)`` and z, y,
    x ranges whatever the stored axes (absent T or C: index 0).

    Attributes
    ----------
    kind
        ``"zarr"`` (a zarr array folder) or ``"tiff"`` (a TIFF file, memory-mapped).
    path
        The array's folder or file.
    axes
        The stored axes (a subsequence of TCZYX or TZCYX with ZYX).
    token
        The run the array is opened for.
    tiff_axes
        The ``axes`` override a TIFF is read with.
    writable
        Open a zarr array for writing.
    """

    kind: str
    path: str
    axes: str
    token: str
    tiff_axes: str | None = None
    writable: bool = False

    def open(self) -> Any:
        """The array (zarr array or memory-mapped ndarray), from the cache when already open here."""
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
            while len(_OPEN) > _CACHE_SIZE:
                _OPEN.popitem(last=False)
        return array

    def _key(self, t: int, c: int, z: slice, ys: slice, xs: slice) -> tuple:
        parts = {"T": t, "C": c, "Z": z, "Y": ys, "X": xs}
        return tuple(parts[a] for a in self.axes)

    def read(self, t: int, c: int, z: tuple[int, int], ys: tuple[int, int], xs: tuple[int, int]) -> np.ndarray:
        """Slices ``z[0]:z[1]`` over ``ys`` x ``xs`` of volume ``(t, c)``: shape (Z, Y, X), the stored dtype."""
        return np.asarray(self.open()[self._key(t, c, slice(*z), slice(*ys), slice(*xs))])

    def write(self, t: int, c: int, z0: int, y0: int, x0: int, data: np.ndarray) -> None:
        """Store ``data`` (Z, Y, X) into volume ``(t, c)`` from slice ``z0`` and pixel ``(y0, x0)``."""
        n, h, w = data.shape
        self.open()[self._key(t, c, slice(z0, z0 + n), slice(y0, y0 + h), slice(x0, x0 + w))] = data


def forget_arrays(token: str) -> None:
    """Close (drop from this process's cache) the arrays opened for run ``token``."""
    with _OPEN_LOCK:
        for key in [k for k in _OPEN if k[3] == token]:
            del _OPEN[key]
