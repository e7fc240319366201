"""Out-of-core prediction for volumes larger than memory: OME-Zarr (or a memory-mapped TIFF) in, OME-Zarr out.

:func:`predict_large` makes the same slices as :func:`.volume.augment_stack` without ever holding a
whole volume (or, for min-max normalisation, a whole slice) in memory. Reading and writing the stores
(formats, metadata, chunks) is :mod:`zaugnet.io.omezarr`'s; this module cuts the work into blocks,
schedules them, and makes an interrupted run resumable.

- The work is cut into *blocks*: one gap between two input slices times one XY block of ``chunk_yx``
  x ``chunk_yx`` pixels (the CLI's ``--chunk``). A block task reads the slices the method uses for that
  gap (:func:`zaugnet.gaps.context_indices`: the K slices of the model-input contract, edge slices
  repeated at the first and last gaps; for a baseline those :func:`.baselines.reach` names: two for
  ``linear``, four for ``cubic``, the block's whole z column for ``spline``) over the block plus a halo of context (the
  model's own ``halo``, 128 px by default; origins on the network's 16-pixel grid, as in-memory
  tiling), predicts every new slice of that gap, keeps the block and writes it. Output chunks are one
  z-slice x ``chunk_yx`` x ``chunk_yx``, aligned with the blocks, so a task writes whole chunks and no
  two tasks write the same chunk.
- Tasks run with dask: the threaded scheduler by default (``num_workers`` threads; on a CPU torch then
  gets ``cores // workers`` intra-op threads each so workers do not oversubscribe the cores), or a
  ``dask.distributed`` ``Client`` (the model is scattered once to the workers; tasks are submitted in
  a bounded window). Workers must see the input and output paths (a shared file system on a cluster).
- Every model block goes through the in-memory predictor: a copy of the :class:`ModelInterpolator`
  whose tile covers the block and its halo (one forward pass per block) is handed the gap's K slices
  and :meth:`~.interpolator.ModelInterpolator.predict_windows` normalises them with the gap's
  ``(low, scale)`` taken over the K WHOLE slices, as in memory (:func:`zaugnet.gaps.normalize_pair`).
  For min-max normalisation a cheap first pass (dask tasks, one per slice, reading it block by block)
  takes every slice's min and max, and a gap's range is the joint min and max of its K slices: what
  ``normalize_pair`` gives on the whole slices. ``percentile`` normalisation needs the joint percentiles:
  that first pass loads one gap's K whole slices per task (memory: a few slices, not the volume). So
  blocks differ from in-memory prediction only by tiling (within 1e-4 of the intensity range with the
  default halo). Networks that normalise inside (``normalization="none"``, foreign packages) see one
  block at a time (a warning says so).
- Original slices are copied exactly; baselines (``linear``, ``cubic``, ``spline``) run the in-memory code on
  the slices they read and give identical values (the spline's column: ``n_z`` x ``chunk`` x ``chunk``
  values per block; lower ``--chunk`` for very deep stacks).
- ZAugNet (midpoints only) with a factor 2^k runs k passes: passes 1..k-1 write float32 intermediate
  stores (inside the unfinished output, deleted when no longer needed), the last pass writes the output.

Resume
------
The output is built in ``OUTPUT.partial`` (an OME-Zarr store from the start, with a ``.zaugnet/`` work
folder) and renamed to ``OUTPUT`` when complete, so ``OUTPUT`` only ever exists whole. After a block's
chunks are written (zarr's local store writes each chunk atomically) the task writes an empty marker
file ``.zaugnet/done/p<pass>/t<t>c<c>g<gap>/<by>_<bx>``. A rerun with ``resume=True`` checks that the
settings are the same (input, positions, method, model weights and slices per gap, chunk and halo:
``manifest.json``), reads the markers and the saved ranges of the first pass, and computes only the
blocks without a marker. Markers rather than chunk existence, because an all-zero chunk is never
written (zarr skips chunks equal to the fill value) and because a block writes several chunks: a
killed task leaves no marker and is simply redone. The input's fingerprint is the size and
modification time of each of its files (the TIFF, or every metadata and chunk file of the zarr array),
so data rewritten between runs is noticed without reading it; a model is identified by the sha256 of
its weights file (``ModelInterpolator.weights_sha256``) or else of its ``state_dict``, and a run with a
model that has neither is never resumed. ``restart=True`` (the CLI's ``--restart``) or
``overwrite=True`` discards an unfinished run.

A run holds an exclusive lock (``flock``) on ``OUTPUT.lock`` from start to end, so a second run on the
same output is refused instead of mixing its blocks in. The kernel drops the lock when the process
dies: a file left by a killed run blocks nothing. Write errors (a full disk, a folder that cannot be
written) are reported naming the output; after a full disk the partial store is kept for resume.

Memory
------
What a run holds does not depend on the volume's size: per worker, one block's K slices (with halo)
and the network's activations for one block (about 200 MB for the test suite's tiny network at 512 +
2 x 128 px, more for bigger networks: lower ``chunk_yx`` or the workers to fit), plus the per-slice
min/max and one marker listing per gap. Tasks are handed to dask in bounded waves (threads) or a
bounded window (distributed), so the task graph does not grow with the volume either. glibc keeps
freed memory in per-thread arenas; ``MALLOC_ARENA_MAX=2`` shows the working set without that.
dask.distributed's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which makes torch's CPU
forward pass about twice as slow; on CPU clusters drop it from ``distributed.nanny.pre-spawn-environ``
(``benchmarks/big_volume.py`` measures both).
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
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..atomic import atomic_write_text
from ..errors import InputError
from ..gaps import SIZE_MULTIPLE, context_indices, exact, grid_floor, normalize_pair, split_positions
from ..io.omezarr import (
    NGFF_AXES,
    ArrayRef,
    LargeInput,
    create_array,
    create_ome_zarr,
    default_chunks,
    forget_arrays,
    open_large,
    replace_dir,
)
from ..io.tiff import SUPPORTED_DTYPES, VoxelSize
from .baselines import BASELINES, interpolate_axial, reach
from .interpolator import ModelInterpolator
from .plan import ZPlan, check_positions, midpoint_passes
from .volume import to_dtype

try:
    import fcntl
except ImportError:  # Windows: no flock, so runs are not locked
    fcntl = None  # type: ignore[assignment]

__all__ = ["predict_large"]

log = logging.getLogger(__name__)

#: Slice pixels read at once by the min/max pass (a square of this side, aligned to the input's chunks).
STATS_BLOCK = 2048
PARTIAL_SUFFIX = ".partial"
WORK_DIR = ".zaugnet"
LOCK_SUFFIX = ".lock"
#: 3: each model block through ModelInterpolator.predict_windows, K slices per gap (n_slices in the model digest).
_MANIFEST_VERSION = 3
#: errno values of a write that failed for want of space (EFBIG: over the file size limit).
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_RESTART_HINT = "pass --restart to discard the partial output and start again"
#: Manifest entries as the resume-conflict message names them.
_SETTING_NAMES = {"input_fingerprint": "input data", "method": "method or model weights",
                  "positions_sha256": "positions"}


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
    src: ArrayRef
    dst: ArrayRef
    n_src: int
    yx: tuple[int, int]
    chunk: int
    halo: int
    method: str  # a baseline's name or "model"
    n_slices: int  # the model's input slices per gap (0 for a baseline: see baselines.reach)
    out_dtype: str | None  # None: float32 intermediate (no rounding)
    done_dir: str


@dataclass(frozen=True)
class _Gap:
    """The output slices ``k0 ..`` made from gap ``gap`` (between input slices gap and gap + 1)."""

    gap: int
    k0: int
    positions: tuple[float, ...]  # global fractional positions
    fracs: tuple[float, ...]  # relative positions in the gap, as in memory (zaugnet.gaps.split_positions)

    def predicted(self) -> bool:
        """Whether any slice of the gap is predicted (not a copy of an input slice)."""
        return not bool(np.all(exact(np.asarray(self.fracs))))


def _marker(done_dir: str, t: int, c: int, gap: int, by: int, bx: int) -> Path:
    return Path(done_dir) / f"t{t}c{c}g{gap}" / f"{by}_{bx}"


def _context(gap: int, n_slices: int, n_src: int) -> np.ndarray:
    """Indices of the ``n_slices`` input slices of ``gap`` (edge slices repeated): the model-input contract."""
    return context_indices(gap, 1, n_slices, 0, n_src)


def _read_slices(src: ArrayRef, t: int, c: int, idx: np.ndarray, ys: tuple[int, int], xs: tuple[int, int],
                 ) -> np.ndarray:
    """Slices ``idx`` (repeats allowed) of volume ``(t, c)`` over ``ys`` x ``xs``, read as one z range."""
    z0, z1 = int(idx.min()), int(idx.max()) + 1
    return src.read(t, c, (z0, z1), ys, xs)[idx - z0]


def _slice_minmax(_shared: Any, src: ArrayRef, t: int, c: int, z: int, yx: tuple[int, int], step: tuple[int, int],
                  ) -> tuple[float, float]:
    """Min and max of slice ``z`` of volume ``(t, c)`` (as float32, like :func:`zaugnet.gaps.normalize_pair`)."""
    lo, hi = math.inf, -math.inf
    for y0 in range(0, yx[0], step[0]):
        for x0 in range(0, yx[1], step[1]):
            block = src.read(t, c, (z, z + 1), (y0, min(y0 + step[0], yx[0])), (x0, min(x0 + step[1], yx[1])))
            b_lo, b_hi = float(np.float32(block.min())), float(np.float32(block.max()))
            if math.isnan(b_lo) or math.isnan(b_hi):  # (min() with a NaN would drop it)
                return math.nan, math.nan
            lo, hi = min(lo, b_lo), max(hi, b_hi)
    return lo, hi


def _gap_percentile(_shared: Any, src: ArrayRef, t: int, c: int, idx: tuple[int, ...], yx: tuple[int, int],
                    percentiles: tuple[float, float]) -> tuple[float, float]:
    """``(lo, scale)`` of a gap's K whole slices ``idx`` by joint percentiles (loads the K slices)."""
    window = _read_slices(src, t, c, np.asarray(idx), (0, yx[0]), (0, yx[1])).astype(np.float32)
    if not np.isfinite(window).all():
        return math.nan, math.nan
    return normalize_pair(window, "percentile", percentiles)


def _block_task(model: ModelInterpolator | None, job: _Pass, t: int, c: int, gap: _Gap,
                norm: tuple[float, float] | None, by: int, bx: int) -> int:
    """Compute, write and mark one block: every output slice of ``gap`` over XY block ``(by, bx)``.

    ``model`` is the copy of the interpolator whose tile covers the block and its halo; ``norm`` the gap's
    ``(low, scale)`` over its whole slices (None when nothing is predicted).
    """
    h, w = job.yx
    y0, x0 = by * job.chunk, bx * job.chunk
    y1, x1 = min(y0 + job.chunk, h), min(x0 + job.chunk, w)
    pos = np.asarray(gap.positions, dtype=np.float64)
    frac = np.asarray(gap.fracs, dtype=np.float64)
    if job.method in BASELINES:  # the slices the method reads (the spline: the block's whole z column)
        z0, z1 = reach(job.method, gap.gap, job.n_src)
        data = job.src.read(t, c, (z0, z1), (y0, y1), (x0, x1))
        window = data if (z0, z1) == (0, job.n_src) else _ZWindow(data, z0, job.n_src)
        out = interpolate_axial(window, pos, job.method)  # type: ignore[arg-type]
    else:
        out = np.empty((len(pos), y1 - y0, x1 - x0), dtype=np.float32)
        on_slice = exact(frac)
        for k in np.flatnonzero(on_slice):
            z = int(round(pos[k]))
            out[k] = job.src.read(t, c, (z, z + 1), (y0, y1), (x0, x1))[0]
        todo = np.flatnonzero(~on_slice)
        if len(todo):
            if model is None or norm is None:
                raise RuntimeError(f"block {by}_{bx} of gap {gap.gap} needs a model and its gap's range")
            ry0, rx0 = grid_floor(max(0, y0 - job.halo)), grid_floor(max(0, x0 - job.halo))
            ry1, rx1 = min(h, y1 + job.halo), min(w, x1 + job.halo)
            idx = _context(gap.gap, job.n_slices, job.n_src)
            window = _read_slices(job.src, t, c, idx, (ry0, ry1), (rx0, rx1)).astype(np.float32)
            windows = np.broadcast_to(window, (len(todo), *window.shape))  # every position sees the same slices
            pred = model.predict_windows(windows, frac[todo], ranges=[norm] * len(todo))
            out[todo] = pred[:, y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0]
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
    """What identifies ``model`` for resume (all that changes its results); ``weights_sha256`` is ``""`` when
    nothing identifies the weights.

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
    return {"variant": model.variant, "name": model.name, "n_slices": model.n_slices,
            "normalization": model.normalization, "percentiles": list(model.percentiles), "weights_sha256": weights}


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
    """Positions of each pass (into that pass's input); several only for a midpoint model.

    Raises
    ------
    InputError
        Naming ``--model``: a midpoint-only model and positions midpoint passes cannot reach.
    """
    k = midpoint_passes(positions, model, "--model") if model is not None else 0
    if k == 0:
        return [np.round(positions) if model is not None and model.midpoint_only else positions]
    out = []
    size = n
    for _ in range(k - 1):  # full doublings
        out.append(np.arange(2 * size - 1) / 2.0)
        size = 2 * size - 1
    out.append(np.round(positions * 2**k) / 2.0)  # the last pass: only the slices asked for
    return out


def _gaps(positions: np.ndarray, n_src: int) -> list[_Gap]:
    """The output slices grouped by the gap they lie in, as in memory."""
    base, frac = split_positions(positions, n_src)
    gaps = []
    for g in np.unique(base):
        ks = np.flatnonzero(base == g)
        gaps.append(_Gap(int(g), int(ks[0]), tuple(float(p) for p in positions[ks]),
                         tuple(float(f) for f in frac[ks])))
    return gaps


def _block_tile(chunk: int, halo: int) -> int:
    """Tile side of the interpolator copy that predicts a block untiled: the block plus a halo each side.

    A block's read starts up to ``halo`` rounded up to the 16-px grid before it (origins on the grid), so
    the halo counts rounded up, and the side stays a multiple of 16.
    """
    return chunk + 2 * (-(-halo // SIZE_MULTIPLE) * SIZE_MULTIPLE)


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
        Output positions and z spacing, from :func:`.plan.make_plan` with ``open_large(input).n_z``
        and ``.voxel_size.z``.
    method
        A baseline's name (``"linear"``, ``"cubic"``, ``"spline"``) or a :class:`.interpolator.ModelInterpolator`
        (ZAugNet: factors 2^k, in k passes; ZAugNet+ and ZAugNet-C: any plan).
    chunk_yx
        Side of the XY blocks and of the output chunks (a multiple of 16; the CLI's ``--chunk``).
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
        Naming the file or option: a bad input (see :func:`zaugnet.io.omezarr.open_large`), an output
        that exists or is not ``.zarr``, bad positions, chunk (``--chunk``) or halo, an unknown method or
        scheduler, a midpoint-only model asked for non-dyadic positions, an unfinished run with other
        settings or input data (or made with a model that nothing identifies), NaN/inf in the input,
        another run writing ``output``, a full disk or an output that cannot be written.
    """
    info = open_large(input, axes)
    output = Path(output)
    if not output.name.lower().endswith(".zarr"):
        raise InputError(output, "out-of-core output is an OME-Zarr store; name it *.zarr (e.g. out.ome.zarr)")
    if output.resolve() == info.path.resolve():
        raise InputError(output, "is the input; choose another output (inputs are never overwritten)")
    if not isinstance(chunk_yx, int) or chunk_yx <= 0 or chunk_yx % SIZE_MULTIPLE:
        raise InputError("--chunk", f"must be a positive multiple of {SIZE_MULTIPLE}, got {chunk_yx!r}")
    model = method if isinstance(method, ModelInterpolator) else None
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
        src = info.ref(token)
        n_src = info.n_z
        shared_model = None
        inner = None
        if model is not None:  # the gaps' ranges come from the first pass; the network sees one block untiled
            inner = dataclasses.replace(model, tile=_block_tile(chunk_yx, halo), halo=0)
        try:
            with _torch_threads(model, executor):
                for number, pos in enumerate(pass_positions, start=1):
                    last = number == len(pass_positions)
                    dst_path = partial / "0" if last else work / f"pass{number}.zarr"
                    dst = ArrayRef("zarr", str(dst_path), out_axes, token, writable=True)
                    if not last and not dst_path.exists():
                        shape = [len(pos) if a == "Z" else info.size(a) for a in out_axes]
                        create_array(dst_path, shape, np.float32, default_chunks(out_axes, shape, chunk_yx), fast=True)
                    job = _Pass(number, src, dst, n_src, (h, w), chunk_yx, halo,
                                "model" if model is not None else str(method),
                                model.n_slices if model is not None else 0,
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
            forget_arrays(token)
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
    shape = [len(positions) if a == "Z" else info.size(a) for a in out_axes]
    vs = info.voxel_size
    z_in = vs.z or 1.0
    if plan.z_spacing:
        z_out = float(plan.z_spacing)
    else:
        z_out = z_in * float(positions[-1] - positions[0]) / max(1, len(positions) - 1) if len(positions) > 1 else z_in
    voxel = VoxelSize(z_out, vs.y, vs.x, vs.unit)
    provenance = {"input": str(info.path), "method": model.name if model is not None else str(method),
                  "positions": [float(p) for p in positions] if len(positions) <= 10000 else None,
                  "note": plan.note}
    create_ome_zarr(partial, shape, out_dtype, out_axes, voxel, chunk_yx=chunk_yx, extra=info.extra,
                    z_offset=float(positions[0]) * z_in, attributes={"zaugnet": provenance})
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(work / "manifest.json", json.dumps(manifest, indent=1))  # last: the store is ready


def _run_pass(job: _Pass, positions: np.ndarray, n_passes: int, n_t: int, n_c: int, model: ModelInterpolator | None,
              shared_model: Any, executor: _Executor, work: Path, input_path: Path, progress: bool) -> None:
    h, w = job.yx
    gaps = _gaps(positions, job.n_src)
    n_by, n_bx = -(-h // job.chunk), -(-w // job.chunk)
    label = f"pass {job.number}/{n_passes}: " if n_passes > 1 else ""
    norms: dict[tuple[int, int, int], tuple[float, float]] = {}
    if model is not None and any(g.predicted() for g in gaps):
        norms = _gap_ranges(job, gaps, n_t, n_c, model, executor, work, input_path, progress, label)

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


def _gap_ranges(job: _Pass, gaps: list[_Gap], n_t: int, n_c: int, model: ModelInterpolator, executor: _Executor,
                work: Path, input_path: Path, progress: bool, label: str,
                ) -> dict[tuple[int, int, int], tuple[float, float]]:
    """``(lo, scale)`` of every gap the model predicts in, over its K whole slices (a first pass; saved for resume).

    What :func:`zaugnet.gaps.normalize_pair` gives on the gap's K whole slices, as in memory. Keys are
    ``(t, c, gap)``.

    Raises
    ------
    InputError
        Naming ``input_path`` when those slices hold NaN or infinite values.
    """
    h, w = job.yx
    cache = work / f"ranges_p{job.number}.json"
    if cache.exists():
        return {tuple(k): tuple(v) for k, v in json.loads(cache.read_text())}  # type: ignore[misc]
    context = {g.gap: _context(g.gap, job.n_slices, job.n_src) for g in gaps if g.predicted()}
    volumes = [(t, c) for t in range(n_t) for c in range(n_c)]
    ranges: dict[tuple[int, int, int], tuple[float, float]] = {}
    if model.normalization == "minmax":  # a gap's joint min and max are those of its slices' mins and maxes
        chunks = getattr(job.src.open(), "chunks", None)
        step = tuple(_stats_step(chunks[job.src.axes.index(a)] if chunks else 1, n) for a, n in zip("YX", (h, w)))
        slices = sorted({int(z) for idx in context.values() for z in idx})
        calls = [(job.src, t, c, z, (h, w), step) for t, c in volumes for z in slices]
        with tqdm(total=len(calls), desc=f"{label}min/max", unit="slice", disable=not progress, leave=False) as bar:
            results = executor.run(_slice_minmax, None, calls, bar)
        stats = {call[1:4]: r for call, r in zip(calls, results)}
        for t, c in volumes:
            for gap, idx in context.items():
                found = np.array([stats[(t, c, int(z))] for z in idx], dtype=np.float32)  # (K, 2): min, max
                if not np.isfinite(found).all():
                    raise InputError(input_path, "contains NaN or infinite values")
                ranges[(t, c, gap)] = normalize_pair(np.array([found[:, 0].min(), found[:, 1].max()]), "minmax")
    elif model.normalization == "percentile":  # loads each gap's K whole slices
        calls = [(job.src, t, c, tuple(int(z) for z in idx), (h, w), tuple(model.percentiles))
                 for t, c in volumes for idx in context.values()]
        with tqdm(total=len(calls), desc=f"{label}percentiles", unit="gap", disable=not progress,
                  leave=False) as bar:
            results = executor.run(_gap_percentile, None, calls, bar)
        keys = [(t, c, gap) for t, c in volumes for gap in context]
        for key, r in zip(keys, results):
            if not all(math.isfinite(v) for v in r):
                raise InputError(input_path, "contains NaN or infinite values")
            ranges[key] = (float(r[0]), float(r[1]))
    else:  # "none": the network normalises; identity here
        ranges = {(t, c, gap): (0.0, 1.0) for t, c in volumes for gap in context}
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
    replace_dir(partial, output)
