"""Out-of-core prediction (:mod:`zaugnet.predict.outofcore`, stores by :mod:`zaugnet.io.omezarr`): OME-Zarr in
and out, block-wise results equal to in-memory prediction (ZAugNet, ZAugNet+, ZAugNet-C with its K slices and
edge replication, min-max and percentile ranges over whole slices), bounded memory on a 400 MB volume, a
SIGKILLed or interrupted run resumed without recomputing finished blocks, NGFF metadata round trip, a
dask.distributed client, the CLI's ``--chunk``, and bad inputs."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from zaugnet.export.load import from_checkpoint

from zaugnet.cli import EXIT_INPUT_ERROR, main
from zaugnet.errors import InputError
from zaugnet.io.omezarr import (
    create_ome_zarr,
    open_large,
    read_ome_zarr,
    write_ome_zarr,
)
from zaugnet.io.tiff import Stack, VoxelSize, write_stack
from zaugnet.phantoms import simulate_stack
from zaugnet.predict import outofcore
from zaugnet.predict.interpolator import ModelInterpolator
from zaugnet.predict.outofcore import predict_large
from zaugnet.predict.plan import make_plan
from zaugnet.predict.volume import augment_stack, interpolate_volume

VOXEL = VoxelSize(0.6, 0.2, 0.2, "um")
#: Tiled and untiled predictions agree within this fraction of the intensity range (predict.py's promise).
TILING_TOLERANCE = 1e-4


def phantom(shape: tuple[int, int, int], seed: int = 3) -> np.ndarray:
    """A uint16 membrane phantom over most of the 16-bit range, dimmed towards low x (0.1 to 1): a
    block's own min/max differs from the whole slice's, so per-block normalisation would show."""
    vol = simulate_stack(shape, kind="membrane", seed=seed, z_step_um=0.6, xy_step_um=0.2).astype(np.float32)
    vol *= np.linspace(0.1, 1.0, shape[2], dtype=np.float32)
    return np.rint(vol / vol.max() * 60000).astype(np.uint16)


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 4 x 600 x 700 uint16 OME-Zarr volume (chunks 1 x 256 x 256) and its data."""
    data = phantom((4, 600, 700))
    path = tmp_path_factory.mktemp("big") / "in.ome.zarr"
    write_ome_zarr(path, data, "ZYX", VOXEL, chunk_yx=256)
    return path, data


@pytest.fixture()
def one_torch_thread():
    """Torch on one thread while a test runs: on a loaded 2-core machine the in-memory reference with two
    intra-op threads is many times slower; the values are the same to float rounding."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- the same values as in memory --------------------------------------------------------------


def test_zaugnet_plus_blocks_equal_in_memory_prediction(volume, tiny_checkpoints, tmp_path, one_torch_thread) -> None:
    path, data = volume
    model = from_checkpoint(str(tiny_checkpoints["zaugnet+"]))
    plan = make_plan(4, VOXEL.z, factor=3)
    out = predict_large(path, tmp_path / "out.ome.zarr", plan, model, chunk_yx=256, progress=False)
    got = read_ome_zarr(out).data

    reference = interpolate_volume(data, plan.positions, model)  # whole slices, untiled (600 x 700 fits)
    span = float(data.max() - data.min())
    assert got.shape == (10, 600, 700) and got.dtype == np.uint16
    # uint16 output: rounding (0.5) plus the tiling tolerance
    assert np.abs(got - reference).max() <= 0.5 + TILING_TOLERANCE * span
    np.testing.assert_array_equal(got[::3], data)  # originals bit for bit
    assert not (tmp_path / "out.ome.zarr.partial").exists()

    # control: normalising each block (with its halo) by its own range instead of the whole pair's
    # range is far outside the tolerance, so the comparison above does check the whole-slice ranges
    y0, y1, x0, x1 = 0, 256 + 128, 0, 256 + 128
    own = model.predict(data[:1, y0:y1, x0:x1], data[1:2, y0:y1, x0:x1], [1 / 3])[0, :256, :256]
    assert np.abs(own - reference[1, :256, :256]).max() > 10 * TILING_TOLERANCE * span


def test_zaugnet_factor_4_runs_two_passes_like_in_memory(tiny_checkpoints, tmp_path, one_torch_thread) -> None:
    data = phantom((3, 272, 288), seed=5).astype(np.float32)
    write_ome_zarr(tmp_path / "in.ome.zarr", data, "ZYX", VOXEL, chunk_yx=128)
    model = from_checkpoint(str(tiny_checkpoints["zaugnet"]))
    plan = make_plan(3, VOXEL.z, factor=4)
    out = predict_large(tmp_path / "in.ome.zarr", tmp_path / "x4.ome.zarr", plan, model, chunk_yx=128,
                        progress=False)
    got = read_ome_zarr(out)
    reference = interpolate_volume(data, plan.positions, model)
    assert got.data.shape == (9, 272, 288) and got.data.dtype == np.float32
    assert np.abs(got.data - reference).max() <= TILING_TOLERANCE * float(data.max() - data.min())
    np.testing.assert_array_equal(got.data[::4], data)
    assert got.voxel_size.z == pytest.approx(0.15)
    assert sorted(p.name for p in out.iterdir()) == [".zattrs", ".zgroup", "0"]  # no work files left


def test_baselines_equal_in_memory_exactly_from_tiff_and_zarr(tmp_path) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 60000, (2, 5, 2, 90, 100)).astype(np.uint16)  # T Z C Y X
    stack = Stack(data, "TZCYX", VoxelSize(0.5, 0.1, 0.1, "um"))
    write_stack(tmp_path / "in.tif", stack)
    write_ome_zarr(tmp_path / "in.ome.zarr", stack, chunk_yx=64)
    for method, kwargs in (("linear", {"factor": 3}), ("cubic", {"target_spacing": 0.2}), ("spline", {"factor": 2})):
        plan = make_plan(5, 0.5, **kwargs)
        expected = augment_stack(stack, plan, method, progress=False)
        for source in ("in.tif", "in.ome.zarr"):
            out = predict_large(tmp_path / source, tmp_path / f"{method}_{source}.zarr", plan, method, chunk_yx=64,
                                progress=False)
            got = read_ome_zarr(out)
            assert got.axes == "TZCYX"
            np.testing.assert_array_equal(got.data, expected.data)
            vs, ref = got.voxel_size, expected.voxel_size
            assert (vs.z, vs.y, vs.x, vs.unit) == (pytest.approx(ref.z), pytest.approx(ref.y), pytest.approx(ref.x),
                                                   "um")


# --- ZAugNet-C: K slices per gap, through the in-memory interpolator ---------------------------------


def context_stack(shape: tuple[int, int, int] = (5, 112, 128)) -> np.ndarray:
    """A float32 phantom, so out-of-core and in-memory results compare without integer rounding."""
    return phantom(shape, seed=11).astype(np.float32)


@pytest.mark.parametrize("source", ["in.ome.zarr", "in.tif"])
def test_zaugnet_c_blocks_equal_in_memory_prediction(source, tiny_checkpoints, tmp_path, one_torch_thread) -> None:
    """ZAugNet-C (K = 4) out of core, 3 x 3 blocks of 48 px with a 32 px halo, gives augment_stack's slices at every
    gap (the first and last repeat the edge slice); originals bit for bit."""
    data = context_stack()
    stack = Stack(data, "ZYX", VOXEL)
    if source.endswith(".tif"):
        write_stack(tmp_path / source, stack)
    else:
        write_ome_zarr(tmp_path / source, stack, chunk_yx=64)  # input chunks unlike the blocks
    model = from_checkpoint(str(tiny_checkpoints["zaugnet-c"]))
    assert model.n_slices == 4
    plan = make_plan(5, VOXEL.z, factor=3)
    out = predict_large(tmp_path / source, tmp_path / "out.ome.zarr", plan, model, chunk_yx=48, halo=32,
                        progress=False)
    got = read_ome_zarr(out)

    expected = augment_stack(stack, plan, model, progress=False)  # whole slices, untiled
    span = float(data.max() - data.min())
    assert got.data.shape == expected.data.shape == (13, 112, 128) and got.data.dtype == np.float32
    assert np.abs(got.data - expected.data).max() <= TILING_TOLERANCE * span
    np.testing.assert_array_equal(got.data[::3], data)  # originals bit for bit
    assert got.voxel_size.z == pytest.approx(expected.voxel_size.z)
    assert json.loads((out / ".zattrs").read_text())["zaugnet"]["method"] == model.name

    # control: at the first gap, the four slices 0..3 instead of the edge-replicated 0, 0, 1, 2 give another
    # slice, far outside the tolerance, so the comparison above does check the edge replication
    unreplicated = model.predict_windows(data[None, 0:4], [1 / 3])[0]
    assert np.abs(unreplicated - expected.data[1]).max() > 100 * TILING_TOLERANCE * span


def lopsided_net(x: torch.Tensor) -> torch.Tensor:
    """A pointwise stand-in for ZAugNet-C (K = 4 slices, then the DPM): unequal weights per slice (the order and
    the edge replication show), squared (the intensity range shows: not scale-equivariant), plus z."""
    mix = 0.1 * x[:, 0] + 0.2 * x[:, 1] + 0.3 * x[:, 2] + 0.4 * x[:, 3]
    return (mix**2 + x[:, 4])[:, None]


@pytest.mark.parametrize("normalization", ["minmax", "percentile"])
def test_zaugnet_c_ranges_are_those_of_the_whole_k_slices(normalization, tmp_path) -> None:
    """Each gap's (low, scale) out of core is normalize_pair's over its K whole slices (min/max from the first
    pass's per-slice extremes; percentiles from the K whole slices), as in memory, for every time point and
    channel; a block normalised by its own range would be far off."""
    rng = np.random.default_rng(4)
    data = rng.gamma(2.0, 900.0, (2, 5, 2, 64, 80)).astype(np.float32)  # T Z C Y X
    data *= np.linspace(0.2, 3.0, 80, dtype=np.float32)  # every block has its own range
    data[1, 4, 1, 5, 70] = 2e5  # a hot pixel: min/max and percentiles differ
    stack = Stack(data, "TZCYX", VOXEL)
    write_ome_zarr(tmp_path / "in.ome.zarr", stack, chunk_yx=32)
    model = ModelInterpolator(lopsided_net, "zaugnet-c", n_slices=4, normalization=normalization,
                              percentiles=(1.0, 99.0))
    plan = make_plan(5, VOXEL.z, z_positions=[0.25, 0.6])
    out = predict_large(tmp_path / "in.ome.zarr", tmp_path / "out.ome.zarr", plan, model, chunk_yx=32, halo=16,
                        progress=False)
    got = read_ome_zarr(out).data
    expected = augment_stack(stack, plan, model, progress=False).data
    span = float(data.max() - data.min())
    assert got.shape == expected.shape == (2, 13, 2, 64, 80)
    assert np.abs(got - expected).max() <= 1e-6 * span  # pointwise network: no tiling error at all
    np.testing.assert_array_equal(got[:, ::3], data)

    # control: the last gap's window (edge replicated: slices 2, 3, 4, 4) over the first block, normalised by its
    # own range instead of the whole slices'
    window = data[0, [2, 3, 4, 4], 0, :32, :32]
    own = model.predict_windows(window[None], [0.6])[0]
    assert np.abs(own - expected[0, 11, 0, :32, :32]).max() > 1e-2 * span


def test_zaugnet_c_cli_zarr_output_with_chunk(tiny_checkpoints, tmp_path, one_torch_thread, capsys) -> None:
    """``zaugnet predict in.tif -o out.zarr --method model --model <ZAugNet-C> --chunk 64``: exit 0, the in-memory
    result (the model's own halo, 128 px, around each 64 px block: wider than that, no block sees whole slices)."""
    data = context_stack((5, 80, 336))
    write_stack(tmp_path / "in.tif", Stack(data, "ZYX", VOXEL))
    checkpoint = str(tiny_checkpoints["zaugnet-c"])
    code = main(["predict", str(tmp_path / "in.tif"), "-o", str(tmp_path / "out.zarr"), "--method", "model",
                 "--model", checkpoint, "--chunk", "64", "--quiet"])
    assert code == 0, capsys.readouterr().err
    got = read_ome_zarr(tmp_path / "out.zarr")
    assert json.loads((tmp_path / "out.zarr" / "0" / ".zarray").read_text())["chunks"] == [1, 64, 64]

    plan = make_plan(5, VOXEL.z, factor=2)  # the CLI's default factor
    expected = augment_stack(Stack(data, "ZYX", VOXEL), plan, from_checkpoint(checkpoint), progress=False)
    assert got.data.shape == expected.data.shape == (9, 80, 336)
    assert np.abs(got.data - expected.data).max() <= TILING_TOLERANCE * float(data.max() - data.min())
    np.testing.assert_array_equal(got.data[::2], data)
    assert got.voxel_size.z == pytest.approx(0.3)


class Interrupted(Exception):
    """Stands for a run stopped half-way (Ctrl-C, a crash)."""


def test_interrupted_zaugnet_c_run_resumes_to_the_same_result(tiny_checkpoints, tmp_path, monkeypatch,
                                                              one_torch_thread) -> None:
    """A ZAugNet-C run stopped after 6 of its 16 blocks resumes with the other 10 (its saved ranges reused) to the
    bytes of an uninterrupted run; a model that differs only in its slices per gap does not resume it."""
    data = context_stack((5, 96, 96))
    source = tmp_path / "in.ome.zarr"
    write_ome_zarr(source, data, "ZYX", VOXEL, chunk_yx=48)
    model = from_checkpoint(str(tiny_checkpoints["zaugnet-c"]))
    plan = make_plan(5, VOXEL.z, factor=2)
    options = {"chunk_yx": 48, "halo": 32, "progress": False, "scheduler": "synchronous"}
    once = read_ome_zarr(predict_large(source, tmp_path / "once.ome.zarr", plan, model, **options)).data

    real, computed = outofcore._block_task, []

    def counted(*task):
        if len(computed) == 6 and stop[0]:
            raise Interrupted
        computed.append(task[4].gap)
        return real(*task)

    stop = [True]
    monkeypatch.setattr(outofcore, "_block_task", counted)
    out = tmp_path / "out.ome.zarr"
    with pytest.raises(Interrupted):
        predict_large(source, out, plan, model, **options)
    partial = tmp_path / "out.ome.zarr.partial"
    assert len(list(partial.glob(".zaugnet/done/p1/*/*"))) == 6 and not out.exists()
    saved = json.loads((partial / ".zaugnet" / "ranges_p1.json").read_text())
    assert sorted(k[2] for k, _ in saved) == [0, 1, 2, 3]  # every gap's range, from the first pass

    other = dataclasses.replace(model, n_slices=2)  # the same weights and settings
    with pytest.raises(InputError, match=r"out\.ome\.zarr\.partial: holds an unfinished run with other settings "
                                         r"\(method or model weights\)"):
        predict_large(source, out, plan, other, **options)

    stop[0] = False
    computed.clear()
    predict_large(source, out, plan, model, **options)
    assert len(computed) == 16 - 6
    np.testing.assert_array_equal(read_ome_zarr(out).data, once)
    expected = augment_stack(Stack(data, "ZYX", VOXEL), plan, model, progress=False).data
    assert np.abs(once - expected).max() <= TILING_TOLERANCE * float(data.max() - data.min())


# --- memory ----------------------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to reset the peak RSS")
def test_peak_memory_stays_far_below_a_400_mb_volume(tmp_path) -> None:
    """Peak RSS growth while predicting a 3 x 8192 x 8192 uint16 volume (403 MB; one slice 134 MB) stays
    under 100 MB: no slice, let alone the volume, is ever held whole.

    Measured in a subprocess: after a warm-up run on a small volume (torch, dask's threads, zarr),
    the kernel's peak-RSS counter is reset (``/proc/self/clear_refs``) and ``VmHWM`` read after the big
    run. ``RLIMIT_AS`` is no use (torch maps far more address space than it touches) and ``ru_maxrss``
    cannot be reset. ``MALLOC_ARENA_MAX=2`` keeps glibc from giving each worker thread its own arena
    of freed-but-kept memory (that adds a constant ~70 MB that does not grow with the volume either).
    The network is a stand-in (mean of the two normalised slices) so the run takes seconds; every other
    step is the model path: min/max pass, halo reads, whole-pair normalisation, ModelInterpolator, writes.
    """
    n = 8192
    array = create_ome_zarr(tmp_path / "big.ome.zarr", (3, n, n), np.uint16, "ZYX", VOXEL, chunk_yx=1024)
    band = (np.add.outer(np.arange(1024), np.arange(n)) % 4096).astype(np.uint16)
    for z in range(3):
        for y0 in range(0, n, 1024):
            array[z, y0:y0 + 1024] = band + np.uint16(1000 * z + y0 // 1024)
    code = f"""
        import re, numpy as np
        from pathlib import Path
        from zaugnet.predict.outofcore import predict_large
        from zaugnet.io.omezarr import write_ome_zarr
        from zaugnet.predict.interpolator import ModelInterpolator
        from zaugnet.predict.plan import make_plan

        def status(key):
            return int(re.search(key + r":\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024

        folder = Path({str(tmp_path)!r})
        model = ModelInterpolator(lambda x: x[:, :2].mean(1, keepdim=True), "zaugnet+")
        plan = make_plan(3, 0.6, factor=2)
        small = np.random.default_rng(0).integers(0, 4000, (3, 1100, 1100)).astype(np.uint16)
        write_ome_zarr(folder / "warm.ome.zarr", small)
        predict_large(folder / "warm.ome.zarr", folder / "warm_out.ome.zarr", plan, model, progress=False)
        Path("/proc/self/clear_refs").write_text("5")
        before = status("VmRSS")
        predict_large(folder / "big.ome.zarr", folder / "big_out.ome.zarr", plan, model, progress=False)
        print("GROWTH_MB", status("VmHWM") - before)
    """
    result = run_python(code, env={"MALLOC_ARENA_MAX": "2"}, timeout=300)
    assert result.returncode == 0, result.stderr
    growth = float(re.search(r"GROWTH_MB (\S+)", result.stdout).group(1))
    print(f"peak RSS growth: {growth:.0f} MB for a 403 MB volume")
    assert growth < 100, f"peak RSS grew by {growth:.0f} MB on a 403 MB volume"
    out = zarr.open_array(str(tmp_path / "big_out.ome.zarr" / "0"), mode="r")
    assert out.shape == (5, n, n)
    np.testing.assert_array_equal(out[2, 4000:4100, 100:300], array[1, 4000:4100, 100:300])
    mid = out[1, 5000:5004, 7000:7004].astype(np.float32)  # the stand-in predicts the pair's mean
    expected = (array[0, 5000:5004, 7000:7004].astype(np.float32) + array[1, 5000:5004, 7000:7004]) / 2
    assert np.abs(mid - expected).max() <= 1


# --- resume ----------------------------------------------------------------------------------------


def test_killed_run_resumes_without_recomputing_finished_blocks(tiny_checkpoints, tmp_path, caplog) -> None:
    """A two-pass ZAugNet run SIGKILLed in its second pass, then resumed: same bytes as an uninterrupted
    run; blocks with a completion marker (all of pass 1, some of pass 2) are not computed again."""
    data = phantom((5, 200, 200), seed=7)
    source = tmp_path / "in.ome.zarr"
    write_ome_zarr(source, data, "ZYX", VOXEL, chunk_yx=64)
    checkpoint = tiny_checkpoints["zaugnet"]
    options = {"chunk_yx": 64, "halo": 32, "progress": False}
    plan = make_plan(5, VOXEL.z, factor=4)
    model = from_checkpoint(str(checkpoint))
    expected = read_ome_zarr(predict_large(source, tmp_path / "once.ome.zarr", plan, model, **options)).data

    blocks_pass1, blocks_pass2 = 4 * 16, 8 * 16  # gaps x 4 x 4 blocks
    kill_after = blocks_pass1 + 20
    code = f"""
        import os, signal, threading
        from zaugnet.predict import outofcore
        from zaugnet.export.load import from_checkpoint
        from zaugnet.predict.plan import make_plan

        real, lock, count = outofcore._block_task, threading.Lock(), [0]

        def block_then_maybe_die(*args):
            result = real(*args)
            with lock:
                count[0] += 1
                if count[0] >= {kill_after}:
                    os.kill(os.getpid(), signal.SIGKILL)
            return result

        outofcore._block_task = block_then_maybe_die
        outofcore.predict_large({str(source)!r}, {str(tmp_path / "out.ome.zarr")!r}, make_plan(5, 0.6, factor=4),
                                from_checkpoint({str(checkpoint)!r}), **{options!r})
    """
    killed = run_python(code)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    partial = tmp_path / "out.ome.zarr.partial"
    assert partial.is_dir() and not (tmp_path / "out.ome.zarr").exists()
    done_root = partial / ".zaugnet" / "done"
    finished = {(int(p.parent.parent.name[1:]), *map(int, re.findall(r"\d+", p.parent.name)),
                 *map(int, p.name.split("_"))) for p in done_root.glob("p*/*/*")}
    assert len([f for f in finished if f[0] == 1]) == blocks_pass1
    assert kill_after <= len(finished) < blocks_pass1 + blocks_pass2
    chunks_before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (partial / "0").glob("*/*/*")
                     if re.fullmatch(r"\d+/\d+/\d+", p.relative_to(partial / "0").as_posix())}
    assert chunks_before

    computed = []
    real = outofcore._block_task

    def recording(model, job, t, c, gap, norm, by, bx):
        computed.append((job.number, t, c, gap.gap, by, bx))
        return real(model, job, t, c, gap, norm, by, bx)

    caplog.set_level(logging.INFO, logger="zaugnet.predict.outofcore")
    outofcore._block_task = recording
    try:
        out = predict_large(source, tmp_path / "out.ome.zarr", plan, model, **options)
    finally:
        outofcore._block_task = real
    assert not set(computed) & finished
    assert len(computed) + len(finished) == blocks_pass1 + blocks_pass2
    assert f"{len(finished) - blocks_pass1} of {blocks_pass2} blocks already done" in caplog.text
    np.testing.assert_array_equal(read_ome_zarr(out).data, expected)
    # chunks of pass-2 blocks finished before the kill were not rewritten (same inode and mtime)
    n1 = 2 * 5 - 1
    gap_of = np.minimum(np.arange(17) // 2, n1 - 2)
    for p, before in chunks_before.items():
        z, by, bx = (int(v) for v in p.relative_to(partial / "0").parts)
        if (2, 0, 0, int(gap_of[z]), by, bx) in finished:
            now = out / "0" / p.relative_to(partial / "0")
            assert (now.stat().st_ino, now.stat().st_mtime_ns) == before


def test_unfinished_run_with_other_settings_is_refused(tmp_path) -> None:
    data = phantom((3, 64, 64))
    write_ome_zarr(tmp_path / "in.ome.zarr", data)
    plan = make_plan(3, VOXEL.z, factor=2)
    predict_large(tmp_path / "in.ome.zarr", tmp_path / "a.ome.zarr", plan, "linear", progress=False)
    # fake an interrupted run: a partial output made with another method
    os.replace(tmp_path / "a.ome.zarr", tmp_path / "b.ome.zarr.partial")
    (tmp_path / "b.ome.zarr.partial" / ".zaugnet").mkdir()
    manifest = {"version": 1, "method": "cubic"}
    (tmp_path / "b.ome.zarr.partial" / ".zaugnet" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=r"b\.ome\.zarr\.partial: holds an unfinished run with other settings"):
        predict_large(tmp_path / "in.ome.zarr", tmp_path / "b.ome.zarr", plan, "linear", progress=False)
    out = predict_large(tmp_path / "in.ome.zarr", tmp_path / "b.ome.zarr", plan, "linear", progress=False,
                        resume=False)
    np.testing.assert_array_equal(read_ome_zarr(out).data[::2], data)


# --- metadata, schedulers --------------------------------------------------------------------------


def test_ome_zarr_metadata_round_trip_with_new_z_spacing(tmp_path) -> None:
    data = np.random.default_rng(1).integers(0, 255, (2, 4, 3, 40, 50)).astype(np.uint8)  # T Z C Y X
    write_ome_zarr(tmp_path / "in.ome.zarr", Stack(data, "TZCYX", VoxelSize(0.8, 0.25, 0.25, "um")), chunk_yx=32)
    group = zarr.open_group(str(tmp_path / "in.ome.zarr"), mode="r+")
    attrs = group.attrs.asdict()
    attrs["multiscales"][0]["axes"][0]["unit"] = "second"
    attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"][0] = 30.0
    attrs["omero"] = {"channels": [{"label": name} for name in ("dapi", "gfp", "rfp")]}
    group.attrs.update(attrs)

    info = open_large(tmp_path / "in.ome.zarr")
    assert (info.axes, info.shape, info.n_z) == ("TCZYX", (2, 3, 4, 40, 50), 4)
    assert info.voxel_size == VoxelSize(0.8, 0.25, 0.25, "um")
    plan = make_plan(info.n_z, info.voxel_size.z, factor=2)
    out = predict_large(tmp_path / "in.ome.zarr", tmp_path / "out.ome.zarr", plan, "cubic", chunk_yx=32,
                        progress=False)

    meta = json.loads((out / ".zattrs").read_text())
    ms = meta["multiscales"][0]
    assert ms["version"] == "0.4"
    assert ms["axes"] == [{"name": "t", "type": "time", "unit": "second"}, {"name": "c", "type": "channel"},
                          {"name": "z", "type": "space", "unit": "micrometer"},
                          {"name": "y", "type": "space", "unit": "micrometer"},
                          {"name": "x", "type": "space", "unit": "micrometer"}]
    assert ms["datasets"] == [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [30.0, 1.0, 0.4, 0.25, 0.25]}]}]
    assert meta["omero"]["channels"][1]["label"] == "gfp"
    array = json.loads((out / "0" / ".zarray").read_text())
    assert array["shape"] == [2, 3, 7, 40, 50] and array["chunks"] == [1, 1, 1, 32, 32]
    assert array["dimension_separator"] == "/" and array["dtype"] == "|u1"
    back = read_ome_zarr(out)
    assert back.axes == "TZCYX" and back.voxel_size == VoxelSize(0.4, 0.25, 0.25, "um")
    np.testing.assert_array_equal(back.data[:, ::2], data)
    assert open_large(out).extra["time"] == (30.0, "second")


def test_reads_ngff_05_with_mixed_units_and_translation(tmp_path) -> None:
    group = zarr.open_group(str(tmp_path / "v05.zarr"), mode="w", zarr_format=3)
    group.create_array("s0", shape=(3, 20, 30), chunks=(1, 20, 30), dtype="float32")
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "z", "type": "space", "unit": "micrometer"},
                 {"name": "y", "type": "space", "unit": "nanometer"},
                 {"name": "x", "type": "space", "unit": "nanometer"}],
        "datasets": [{"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [0.5, 100.0, 100.0]}, {"type": "translation", "translation": [2.0, 50.0, 0]}]}],
    }]}
    info = open_large(tmp_path / "v05.zarr")
    assert (info.axes, info.n_z) == ("ZYX", 3)
    assert info.voxel_size == VoxelSize(0.5, pytest.approx(0.1), pytest.approx(0.1), "um")
    assert info.extra["translation"] == {"Z": 2.0, "Y": pytest.approx(0.05), "X": 0.0}


def test_dask_distributed_client_gives_the_same_result(volume, tiny_checkpoints, tmp_path) -> None:
    distributed = pytest.importorskip("distributed")
    path, _ = volume
    model = from_checkpoint(str(tiny_checkpoints["zaugnet+"]))
    plan = make_plan(4, VOXEL.z, z_positions=[0.5])
    options = {"chunk_yx": 256, "halo": 32, "progress": False}
    threaded = read_ome_zarr(predict_large(path, tmp_path / "threads.ome.zarr", plan, model, **options)).data
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as client:
        out = predict_large(path, tmp_path / "cluster.ome.zarr", plan, model, client=client, **options)
    # the same blocks; torch may use other intra-op threads in the cluster: at most a rounding step apart
    assert np.abs(read_ome_zarr(out).data.astype(np.int32) - threaded).max() <= 1


# --- bad input -------------------------------------------------------------------------------------


def _bad_inputs(tmp: Path) -> dict[str, Path]:
    (tmp / "plain_folder").mkdir()
    (tmp / "notes.txt").write_text("not an image")
    zarr.open_group(str(tmp / "no_meta.zarr"), mode="w", zarr_format=2).create_array("0", shape=(3, 8, 8),
                                                                                      dtype="uint16")
    zarr.create_array(str(tmp / "bare_array.zarr"), shape=(3, 8, 8), dtype="uint16", zarr_format=2)
    write_ome_zarr(tmp / "one_slice.ome.zarr", np.zeros((1, 8, 8), np.uint16))
    write_ome_zarr(tmp / "no_axes.ome.zarr", np.zeros((3, 8, 8), np.uint16))
    group = zarr.open_group(str(tmp / "no_axes.ome.zarr"), mode="r+")
    attrs = group.attrs.asdict()
    del attrs["multiscales"][0]["axes"]
    group.attrs.put(attrs)
    return {"missing": tmp / "missing.ome.zarr", "plain_folder": tmp / "plain_folder", "text": tmp / "notes.txt",
            "no_meta": tmp / "no_meta.zarr", "bare_array": tmp / "bare_array.zarr",
            "one_slice": tmp / "one_slice.ome.zarr", "no_axes": tmp / "no_axes.ome.zarr"}


@pytest.mark.parametrize(("case", "message"), [
    ("missing", "does not exist"),
    ("plain_folder", "not an OME-Zarr store"),
    ("text", "not an OME-Zarr store"),
    ("no_meta", "without OME-Zarr 'multiscales' metadata"),
    ("bare_array", "bare zarr array"),
    ("one_slice", "1 z-slice"),
    ("no_axes", "no 'axes'"),
])
def test_bad_input_names_the_path(case, message, tmp_path) -> None:
    path = _bad_inputs(tmp_path)[case]
    plan = make_plan(3, 1.0, factor=2)
    with pytest.raises(InputError, match=re.escape(message)) as err:
        predict_large(path, tmp_path / "out.ome.zarr", plan, "linear", progress=False)
    assert err.value.where == str(path)
    assert not (tmp_path / "out.ome.zarr").exists() and not (tmp_path / "out.ome.zarr.partial").exists()


def test_bad_options_and_values(tmp_path, tiny_checkpoints) -> None:
    data = phantom((3, 64, 64)).astype(np.float32)
    write_ome_zarr(tmp_path / "in.ome.zarr", data)
    source, plan = tmp_path / "in.ome.zarr", make_plan(3, 1.0, factor=2)
    with pytest.raises(InputError, match=r"out\.tif: out-of-core output is an OME-Zarr store"):
        predict_large(source, tmp_path / "out.tif", plan, "linear")
    (tmp_path / "exists.zarr").mkdir()
    with pytest.raises(InputError, match=r"exists\.zarr: exists; pass --overwrite"):
        predict_large(source, tmp_path / "exists.zarr", plan, "linear")
    with pytest.raises(InputError, match=r"--chunk: must be a positive multiple of 16"):
        predict_large(source, tmp_path / "o.zarr", plan, "linear", chunk_yx=100)
    with pytest.raises(InputError, match=r"--method: unknown method 'nearest'"):
        predict_large(source, tmp_path / "o.zarr", plan, "nearest")
    midpoint = from_checkpoint(str(tiny_checkpoints["zaugnet"]))
    with pytest.raises(InputError, match=r"--model: .* predicts only midpoints"):
        predict_large(source, tmp_path / "o.zarr", make_plan(3, 1.0, factor=3), midpoint)
    data[1, 5, 5] = np.nan
    write_ome_zarr(tmp_path / "nan.ome.zarr", data)
    with pytest.raises(InputError, match=r"nan\.ome\.zarr: contains NaN or infinite values"):
        predict_large(tmp_path / "nan.ome.zarr", tmp_path / "o.zarr", plan, midpoint, progress=False)
    assert not (tmp_path / "o.zarr").exists() and not (tmp_path / "o.zarr.partial").exists()


@pytest.mark.parametrize("chunk", [100, 0, -16, 64.0])
def test_bad_chunk_names_the_chunk_option(chunk, tmp_path) -> None:
    write_ome_zarr(tmp_path / "in.ome.zarr", phantom((3, 32, 32)))
    with pytest.raises(InputError, match=rf"^--chunk: must be a positive multiple of 16, got {chunk}$"):
        predict_large(tmp_path / "in.ome.zarr", tmp_path / "o.zarr", make_plan(3, 1.0, factor=2), "linear",
                      chunk_yx=chunk)
    assert not (tmp_path / "o.zarr").exists() and not (tmp_path / "o.zarr.partial").exists()


def test_cli_bad_chunk_names_the_chunk_option(tmp_path, capsys) -> None:
    write_stack(tmp_path / "in.tif", Stack(phantom((3, 32, 32)), "ZYX", VOXEL))
    code = main(["predict", str(tmp_path / "in.tif"), "-o", str(tmp_path / "out.zarr"), "--method", "linear",
                 "--chunk", "100", "--quiet"])
    assert code == EXIT_INPUT_ERROR
    assert "--chunk: must be a positive multiple of 16, got 100" in capsys.readouterr().err
    assert not (tmp_path / "out.zarr").exists() and not (tmp_path / "out.zarr.partial").exists()
