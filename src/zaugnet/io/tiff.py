"""Reading and writing microscopy z-stacks (TIFF, ImageJ hyperstack, OME-TIFF).

Stacks are always returned with their axes in the canonical order, a subsequence of
``"TZCYX"`` that contains ``"ZYX"``. Every problem with an input file is reported as an
:class:`~zaugnet.errors.InputError` that names the file.
"""

from __future__ import annotations

import logging
import math
import os
import re
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import tifffile

from ..atomic import atomic_path, write_error
from ..errors import InputError
from .units import RESOLUTION_UNIT_IN_UM, normalise_unit, ome_unit, size_in_um

__all__ = [
    "SUPPORTED_DTYPES",
    "Stack",
    "VoxelSize",
    "available_memory",
    "find_stacks",
    "iter_volumes",
    "read_stack",
    "write_stack",
]

CANONICAL_AXES = "TZCYX"
SUPPORTED_DTYPES = (np.uint8, np.uint16, np.float32)
READABLE_DTYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)
TIFF_SUFFIXES = (".tif", ".tiff")
OME_SUFFIXES = (".ome.tif", ".ome.tiff")

# Errors tifffile (and the codecs under it) raise on files that are not TIFF or are damaged.
_READ_ERRORS = (OSError, ValueError, struct.error, EOFError, IndexError, KeyError, RuntimeError)
_UNKNOWN_MEMORY = 2**63 - 1  # what available_memory says where the system does not tell
# What tifffile logs about a damaged file it would otherwise read anyway (misshapen, or with zeros for what is missing).
_DAMAGE_LOGGED = ("failed to reshape", "invalid page offset", "Missing data are zeroed")



@dataclass(frozen=True)
class VoxelSize:
    """Physical size of a voxel along z, y and x, in `unit`; None where unknown."""

    z: float | None = None
    y: float | None = None
    x: float | None = None
    unit: str = "um"


#: ImageJ metadata carried from an input to the outputs made from it: display range, lookup tables,
#: the image's Info and Properties (not per-slice labels, which no longer match the slices).
IMAGEJ_CARRIED = ("min", "max", "Ranges", "LUTs", "Info", "Properties")


@dataclass
class Stack:
    """An image stack with canonical axes (a subsequence of "TZCYX" containing "ZYX").

    ``imagej`` holds the :data:`IMAGEJ_CARRIED` entries of an ImageJ input, written again to ImageJ outputs.
    """

    data: np.ndarray
    axes: str
    voxel_size: VoxelSize
    path: Path | None = None
    imagej: dict[str, Any] = field(default_factory=dict)


def read_stack(path: str | Path, axes: str | None = None, *, mmap: bool = False, min_slices: int = 3) -> Stack:
    """Read the first image series of a TIFF, ImageJ hyperstack or OME-TIFF file.

    Parameters
    ----------
    path
        The file to read. It is never modified.
    axes
        Axis letters of the stored array (from "TZCYX", each once, containing "ZYX"),
        overriding what the file says; needed when the file does not tell which axis is z.
    mmap
        Memory-map the data (read-only) when the file allows it (uncompressed, contiguous,
        native byte order), else read it into memory.
    min_slices
        Fewest z-slices accepted (3 for training triplets, 2 for prediction).

    Returns
    -------
    Stack
        The data (a view transposed to canonical axis order), its axes and voxel size.

    Raises
    ------
    InputError
        If the file is missing, unreadable, not a z-stack of at least 3 slices, of an
        unsupported dtype, holds NaN or infinite values, or (read into memory) claims more
        memory than is available (checked before any pixel is decoded).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    if path.is_dir():
        raise InputError(path, "is a directory, not a TIFF file")
    try:
        with _tifffile_log() as log, tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise InputError(path, "not a readable TIFF file (it contains no images)")
            series = tif.series[0]
            damage = [msg for msg in log if any(sign in msg for sign in _DAMAGE_LOGGED)]
            if damage:  # without tifffile's "<TiffFile 'name'> " and "Missing data are zeroed" (they are not)
                reason = re.sub(r"^<[^>]*> |\. Missing data are zeroed$", "", damage[0])
                raise InputError(path, f"not a readable TIFF file (truncated or corrupted: {reason})")
            _check_complete(path, tif, series)
            _check_dtype(path, series.dtype, READABLE_DTYPES)
            file_axes = _file_axes(path, series.axes, series.shape, axes)
            canon = "".join(a for a in CANONICAL_AXES if a in file_axes)
            n_z = series.shape[file_axes.index("Z")]
            if n_z < min_slices:
                raise InputError(path, f"has {n_z} z-slice(s); at least {min_slices} are needed")
            voxel_size = _voxel_size(tif)
            carried = {k: v for k, v in (tif.imagej_metadata or {}).items() if k in IMAGEJ_CARRIED}
            data = _load(path, series, mmap)
    except InputError:
        raise
    except _READ_ERRORS as exc:
        raise InputError(path, f"not a readable TIFF file ({exc})") from exc
    data = data.transpose([file_axes.index(a) for a in canon])
    if data.dtype.kind == "f" and not all(np.isfinite(chunk).all() for chunk in data):
        raise InputError(path, "contains NaN or infinite values")
    return Stack(data=data, axes=canon, voxel_size=voxel_size, path=path, imagej=carried)


def write_stack(
    path: str | Path,
    stack_or_data: Stack | np.ndarray,
    axes: str | None = None,
    voxel_size: VoxelSize | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a stack atomically as an ImageJ TIFF (.tif/.tiff) or OME-TIFF (.ome.tif/.ome.tiff).

    Parameters
    ----------
    path
        Output file; its parent directories are created.
    stack_or_data
        A Stack, or an array whose axes are given by `axes`.
    axes
        Axis letters of the array ("ZYX" by default for 3D data); overrides a Stack's axes.
    voxel_size
        Physical voxel size; overrides a Stack's. In ImageJ files x and y are only stored
        together, and the unit only when x and y are known.
    overwrite
        Replace `path` if it exists.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    InputError
        If the name, axes or dtype cannot be written, the file exists and `overwrite` is False,
        or the file system refuses it (full, read-only, no permission, a file where a folder
        should be). No partial or temporary file is left.
    """
    path = Path(path)
    data, axes, voxel_size = unpack_stack(path, stack_or_data, axes, voxel_size)
    voxel_size = voxel_size or VoxelSize()
    axes = _check_axes(path, axes, data.ndim)
    _check_dtype(path, data.dtype, SUPPORTED_DTYPES)
    canon = "".join(a for a in CANONICAL_AXES if a in axes)
    data = data.transpose([axes.index(a) for a in canon])

    name = path.name.lower()
    if not name.endswith(TIFF_SUFFIXES):
        raise InputError(path, "output name must end with .tif, .tiff, .ome.tif or .ome.tiff")
    if path.is_dir():
        raise InputError(path, "is a directory")
    if path.exists() and not overwrite:
        raise InputError(path, "exists; pass --overwrite to replace it")
    if name.endswith(OME_SUFFIXES):
        options = _ome_options(canon, voxel_size)
    else:
        options = _imagej_options(canon, voxel_size, stack_or_data.imagej if isinstance(stack_or_data, Stack) else {})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, data, options)
    except OSError as exc:
        error = write_error(path, exc)
        if error is None:
            raise
        raise error from exc
    return path


def unpack_stack(path: Path, stack_or_data: Stack | np.ndarray, axes: str | None = None,
                 voxel_size: VoxelSize | None = None) -> tuple[np.ndarray, str, VoxelSize | None]:
    """Data, axes and voxel size of what a writer was given: a Stack, or an array (3D defaults to ZYX).

    Explicit ``axes`` and ``voxel_size`` override the Stack's own.
    """
    if isinstance(stack_or_data, Stack):
        return stack_or_data.data, axes or stack_or_data.axes, voxel_size or stack_or_data.voxel_size
    data = np.asarray(stack_or_data)
    axes = axes or ("ZYX" if data.ndim == 3 else None)
    if axes is None:
        raise InputError(path, f"axes must be given for {data.ndim}D data")
    return data, axes, voxel_size


def iter_volumes(stack: Stack) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(label, zyx)`` for each time point and channel of a stack.

    Labels are "" for a plain ZYX stack, else like "t0", "c1" or "t2_c0". The volumes
    are views of ``stack.data``.
    """
    outer = [a for a in stack.axes if a in "TC"]
    sizes = [stack.data.shape[stack.axes.index(a)] for a in outer]
    for index in np.ndindex(*sizes):
        key: list[int | slice] = [slice(None)] * stack.data.ndim
        for axis, i in zip(outer, index):
            key[stack.axes.index(axis)] = i
        label = "_".join(f"{axis.lower()}{i}" for axis, i in zip(outer, index))
        yield label, stack.data[tuple(key)]


def find_stacks(paths: Sequence[str | Path]) -> list[Path]:
    """Expand files and directories into the list of stacks to process.

    A file is kept as is; a directory contributes its ``*.tif`` and ``*.tiff`` files
    (any case, sorted, not recursive, hidden files skipped). Duplicates are dropped.

    Raises
    ------
    InputError
        If a path does not exist, a directory has no TIFF files, or nothing is given.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES and not p.name.startswith(".")
            )
            if not files:
                raise InputError(path, "contains no .tif/.tiff files")
            found.extend(files)
        elif path.exists():
            found.append(path)
        else:
            raise InputError(path, "file does not exist")
    if not found:
        raise InputError("inputs", "no input files given")
    return list(dict.fromkeys(found))


# --- reading helpers ------------------------------------------------------------------------


@contextmanager
def _tifffile_log() -> Iterator[list[str]]:
    """Collect what tifffile logs while reading (instead of printing it) so damage is reported once, clearly."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("tifffile")
    handler, propagate = _Collect(logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _check_complete(path: Path, tif: tifffile.TiffFile, series: tifffile.TiffPageSeries) -> None:
    """Raise if the file is visibly truncated (tifffile may silently fall back to fewer planes)."""
    end = None if series.dataoffset is None else series.dataoffset + series.nbytes
    if end is not None and end > tif.filehandle.size:
        raise InputError(path, "not a readable TIFF file (truncated: image data end past the file)")
    meta = tif.imagej_metadata
    if meta and isinstance(meta.get("images"), int):
        planes = math.prod(n for n, a in zip(series.shape, series.axes) if a not in "YXS")
        if meta["images"] > planes:
            raise InputError(
                path,
                f"not a readable TIFF file (truncated or corrupted: ImageJ metadata lists "
                f"{meta['images']} images, only {planes} found)",
            )


def _check_dtype(path: Path, dtype: np.dtype, allowed: tuple[type, ...]) -> None:
    if np.dtype(dtype).type not in allowed:
        names = ", ".join(np.dtype(t).name for t in allowed)
        raise InputError(path, f"has unsupported data type {np.dtype(dtype).name}; supported: {names}")


def _check_axes(path: Path, axes: str, ndim: int) -> str:
    """Validate user-given axes letters and return them in upper case."""
    axes = axes.upper()
    if len(axes) != ndim:
        raise InputError(path, f"axes {axes!r} have {len(axes)} letters but the data are {ndim}D")
    if set(axes) - set(CANONICAL_AXES) or len(set(axes)) != len(axes) or not set("ZYX") <= set(axes):
        raise InputError(
            path, f"invalid axes {axes!r}: use letters from TZCYX, each at most once, including Z, Y and X"
        )
    return axes


def _file_axes(path: Path, series_axes: str, shape: tuple[int, ...], axes: str | None) -> str:
    """Map tifffile's series axes (or the user's override) to letters from TZCYX."""
    if len(shape) == 2:
        raise InputError(path, "a 2D image, not a z-stack")
    if axes is not None:
        return _check_axes(path, axes, len(shape))
    if "S" in series_axes:
        raise InputError(path, "RGB/multi-sample images are not supported; split the channels first")
    if len(shape) == 3 and series_axes[0] in "QI":
        series_axes = "Z" + series_axes[1:]
    if len(shape) > 5 or set(series_axes) - set(CANONICAL_AXES) or len(set(series_axes)) != len(shape):
        raise InputError(
            path,
            f"cannot tell the axes of shape {shape} (file says {series_axes!r}); "
            "pass axes, e.g. 'TZYX' or 'ZCYX'",
        )
    if "Z" not in series_axes:
        raise InputError(
            path,
            f"has axes {series_axes!r} and no z axis, so it is not a z-stack; "
            f"if it is one, pass axes (e.g. {series_axes.replace(series_axes[0], 'Z', 1)!r})",
        )
    return series_axes


def _load(path: Path, series: tifffile.TiffPageSeries, mmap: bool) -> np.ndarray:
    """Memory-map the series if asked and possible (native byte order included), else read it."""
    if mmap:
        try:
            data = tifffile.memmap(path, mode="r")
        except ValueError:  # compressed, tiled or scattered data: read it instead
            pass
        else:
            if data.shape == tuple(series.shape) and data.dtype.isnative:
                return data
    _check_memory(path, series)
    data = series.asarray()
    return data if data.dtype.isnative else data.astype(data.dtype.newbyteorder("="))


def _check_memory(path: Path, series: tifffile.TiffPageSeries) -> None:
    """Refuse a series whose decoding needs more memory than is available, before decoding it.

    What it needs comes from the file's claims, not its size (a few KB of compressed tiles can
    claim many GB): the array plus one decoded tile or strip per decoding thread (a tile may claim
    far more than the image).
    """
    available = available_memory()
    page = series.keyframe
    chunk = math.prod(page.chunks) * page.dtype.itemsize
    threads = max(1, min(tifffile.TIFF.MAXWORKERS, len(series) * math.prod(page.chunked)))
    needed = series.nbytes + chunk * threads
    if needed > available:
        raise InputError(
            path,
            f"claims {needed / 1e9:.1f} GB of pixels, more than the {available / 1e9:.1f} GB of memory "
            "available; for stacks larger than memory predict out of core to an OME-Zarr output (ending "
            "in .zarr) from an uncompressed TIFF or OME-Zarr input",
        )


def available_memory() -> int:
    """Bytes this process may still allocate: free RAM and swap, within its cgroup limits and RLIMIT_AS.

    Where the system tells none of these, a number larger than any file can claim.
    """
    limits = []
    meminfo = dict(line.split(":", 1) for line in _read_text("/proc/meminfo").splitlines() if ":" in line)
    if "MemAvailable" in meminfo:
        limits.append(sum(int(meminfo.get(key, "0 kB").split()[0]) * 1024 for key in ("MemAvailable", "SwapFree")))
    else:
        try:
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):  # not on this system
            pass
    limits.extend(_cgroup_free())
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            statm = _read_text("/proc/self/statm").split()
            in_use = int(statm[0]) * os.sysconf("SC_PAGE_SIZE") if statm else 0
            limits.append(soft - in_use)
    except (ImportError, ValueError, OSError):
        pass
    return max(0, min(limits)) if limits else _UNKNOWN_MEMORY


# cgroup v2 and v1: where they are mounted, and the files of a cgroup's limit, usage and file cache (in memory.stat)
_CGROUPS = {
    "": ("/sys/fs/cgroup", "memory.max", "memory.current", "file"),
    "memory": ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_cache"),
}


def _cgroup_free() -> list[int]:
    """Bytes left under the memory limits of this process's cgroups (v1 or v2, and the folders above).

    What a cgroup uses counts its file cache, which is given back on demand: that is left out.
    """
    free = []
    for entry in _read_text("/proc/self/cgroup").splitlines():
        _, controllers, folder = entry.strip().split(":", 2)
        kind = next((k for k in _CGROUPS if k == controllers or k in controllers.split(",")), None)
        if kind is None:
            continue
        root, limit_file, usage_file, cache_key = _CGROUPS[kind]
        start = Path(root) / folder.lstrip("/")
        for level in (start, *start.parents):  # a cgroup namespace may hide the path: its root then applies
            limit, used = _read_text(level / limit_file).strip(), _read_text(level / usage_file).strip()
            if limit.isdigit() and used.isdigit():
                stat = (line.split() for line in _read_text(level / "memory.stat").splitlines())
                cache = next((int(f[1]) for f in stat if len(f) == 2 and f[0] == cache_key and f[1].isdigit()), 0)
                free.append(int(limit) - int(used) + cache)
            if level == Path(root):
                break
    return free


def _read_text(path: str | Path) -> str:
    """The text of a small system file, or "" if it cannot be read."""
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _voxel_size(tif: tifffile.TiffFile) -> VoxelSize:
    if tif.is_ome and tif.ome_metadata:
        return _ome_voxel_size(tif.ome_metadata)
    if tif.imagej_metadata is not None:
        return _imagej_voxel_size(tif.imagej_metadata, tif.pages.first)
    return VoxelSize()


def _ome_voxel_size(xml: str) -> VoxelSize:
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return VoxelSize()
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return VoxelSize()
    sizes = {}
    for axis in "ZYX":
        value = _positive(pixels.get(f"PhysicalSize{axis}"))
        sizes[axis.lower()] = (value, pixels.get(f"PhysicalSize{axis}Unit", "um"))
    return _combine(**sizes)


def _imagej_voxel_size(meta: dict, page: tifffile.TiffPage) -> VoxelSize:
    """Voxel size from ImageJ's 'spacing' and 'unit' and the page's resolution tags."""
    unit = normalise_unit(meta["unit"]) if isinstance(meta.get("unit"), str) else None
    if unit == "pixel":
        return VoxelSize()  # explicitly uncalibrated
    resunit = page.tags.get("ResolutionUnit")
    unit_in_um = RESOLUTION_UNIT_IN_UM.get(int(resunit.value)) if resunit is not None else None
    sizes = {"z": (_positive(meta.get("spacing")), unit)}
    for axis in "yx":
        tag = page.tags.get(f"{axis.upper()}Resolution")
        pixels_per_unit = tag.value[0] / tag.value[1] if tag is not None and tag.value[1] else 0.0
        size = _positive(1.0 / pixels_per_unit) if pixels_per_unit else None
        if unit_in_um is not None:  # inch, cm, ...: ImageJ's unit does not apply
            sizes[axis] = (None if size is None else size * unit_in_um, "um")
        elif unit is None and size == 1.0:
            sizes[axis] = (None, None)  # the default resolution: not calibrated
        else:
            sizes[axis] = (size, unit)  # pixels per ImageJ unit (no unit given: assume um)
    return _combine(**sizes)


def _combine(
    z: tuple[float | None, str | None],
    y: tuple[float | None, str | None],
    x: tuple[float | None, str | None],
) -> VoxelSize:
    """Build a VoxelSize from per-axis (value, unit); mixed units are converted to um."""
    given = {"z": z, "y": y, "x": x}
    known = {k: (v, normalise_unit(u or "um")) for k, (v, u) in given.items() if v is not None}
    units = {u for _, u in known.values()}
    if len(units) <= 1:
        return VoxelSize(**{k: v for k, (v, _) in known.items()}, unit=units.pop() if units else "um")
    in_um = {k: v * size_in_um(u) if size_in_um(u) else None for k, (v, u) in known.items()}
    return VoxelSize(**in_um, unit="um")


def _positive(value: object) -> float | None:
    """Return abs(value) as a float, or None if missing, zero, or not a finite number."""
    try:
        number = abs(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


# --- writing helpers ------------------------------------------------------------------------


def _imagej_options(axes: str, voxel_size: VoxelSize, carried: dict[str, Any]) -> dict:
    metadata: dict[str, object] = {**carried, "axes": axes}
    options: dict[str, object] = {"imagej": True, "photometric": "minisblack", "metadata": metadata}
    if voxel_size.z is not None:
        metadata["spacing"] = voxel_size.z
    if voxel_size.x is not None and voxel_size.y is not None:
        options["resolution"] = (1.0 / voxel_size.x, 1.0 / voxel_size.y)
        metadata["unit"] = normalise_unit(voxel_size.unit)
    return options


def _ome_options(axes: str, voxel_size: VoxelSize) -> dict:
    metadata: dict[str, object] = {"axes": axes}
    unit = ome_unit(voxel_size.unit)
    for axis in "ZYX":
        value = getattr(voxel_size, axis.lower())
        if value is not None:
            metadata[f"PhysicalSize{axis}"] = value
            metadata[f"PhysicalSize{axis}Unit"] = unit
    return {"ome": True, "photometric": "minisblack", "metadata": metadata}


def _write_atomic(path: Path, data: np.ndarray, options: dict) -> None:
    """Write to a temporary file next to `path`, then rename it; never leave a partial file."""
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, data, **options)
