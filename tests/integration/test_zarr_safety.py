"""Safety of the out-of-core OME-Zarr output (:func:`zaugnet.predict.outofcore.predict_large`): one writer at a
time (an flock a killed run does not leave held), no resume across other model weights or changed input data,
``restart`` / ``overwrite`` discard an unfinished run, and write errors (a folder that is a file, a full disk)
reported naming the output, the unfinished run kept for resume after a full disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr

from zaugnet.errors import InputError
from zaugnet.io.omezarr import read_ome_zarr, write_ome_zarr
from zaugnet.io.tiff import Stack, VoxelSize
from zaugnet.predict import outofcore
from zaugnet.predict.interpolator import ModelInterpolator
from zaugnet.predict.outofcore import predict_large
from zaugnet.predict.plan import make_plan
from zaugnet.predict.volume import augment_stack

VOXEL = VoxelSize(0.6, 0.2, 0.2, "um")
PLAN = make_plan(3, VOXEL.z, factor=2)
#: 64 px blocks of a 3 x 128 x 128 volume: 2 gaps x 2 x 2 blocks.
OPTIONS = {"chunk_yx": 64, "progress": False, "scheduler": "synchronous"}
N_BLOCKS = 8
RESTART = "pass --restart to discard the partial output and start again"


class Interrupted(Exception):
    """Stands for a run stopped half-way (Ctrl-C, a crash)."""


@pytest.fixture()
def source(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 3 x 128 x 128 uint16 OME-Zarr of noise (chunks 1 x 64 x 64, about 8 kB each: noise does not compress)."""
    data = np.random.default_rng(0).integers(0, 60000, (3, 128, 128)).astype(np.uint16)
    path = tmp_path / "in.ome.zarr"
    write_ome_zarr(path, data, "ZYX", VOXEL, chunk_yx=64)
    return path, data


def linear(data: np.ndarray) -> np.ndarray:
    """In-memory linear interpolation of ``data`` with :data:`PLAN` (what the output must hold)."""
    return augment_stack(Stack(data, "ZYX", VOXEL), PLAN, "linear", progress=False).data


def run_counting(monkeypatch: pytest.MonkeyPatch, *args: object, stop_after: int | None = None,
                 **kwargs: object) -> int:
    """``predict_large(*args, **OPTIONS, **kwargs)``; returns the blocks it computed. With ``stop_after``,
    the run is interrupted (:class:`Interrupted`) after that many blocks, leaving an unfinished output."""
    real, count = outofcore._block_task, [0]

    def counted(*task: object) -> int:
        if count[0] == stop_after:
            raise Interrupted
        count[0] += 1
        return real(*task)

    with monkeypatch.context() as patch:
        patch.setattr(outofcore, "_block_task", counted)
        if stop_after is None:
            predict_large(*args, **{**OPTIONS, **kwargs})
        else:
            with pytest.raises(Interrupted):
                predict_large(*args, **{**OPTIONS, **kwargs})
    return count[0]


def markers(output: Path) -> int:
    """Finished blocks recorded in ``OUTPUT.partial``."""
    return len(list(output.with_name(output.name + ".partial").glob(".zaugnet/done/p*/*/*")))


def start_writer(source: Path, output: Path, after_each_block: str, **env: str) -> subprocess.Popen:
    """A linear ``predict_large`` run in another process; ``after_each_block`` (Python) runs after each block."""
    code = f"""
        import os, signal, time
        from pathlib import Path
        from zaugnet.predict import outofcore
        from zaugnet.predict.plan import make_plan

        real = outofcore._block_task

        def hooked(*args):
            result = real(*args)
            {after_each_block}
            return result

        outofcore._block_task = hooked
        outofcore.predict_large({str(source)!r}, {str(output)!r}, make_plan(3, 0.6, factor=2), "linear",
                                **{OPTIONS!r})
    """
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env})


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, seconds: float = 60) -> None:
    """Wait until ``condition()`` holds (failing if ``process`` ends first or time runs out)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# --- one writer at a time --------------------------------------------------------------------------


def test_second_writer_is_refused_and_the_first_completes(source, tmp_path) -> None:
    path, data = source
    out, started, go = tmp_path / "out.ome.zarr", tmp_path / "started", tmp_path / "go"
    hold = (f"Path({str(started)!r}).touch(); deadline = time.monotonic() + 60\n"
            f"            while not Path({str(go)!r}).exists() and time.monotonic() < deadline: time.sleep(0.02)")
    first = start_writer(path, out, hold)
    try:
        wait_for(started.exists, first)  # the first run is inside its block loop, holding the output
        for kwargs in ({}, {"restart": True}, {"overwrite": True}):
            with pytest.raises(InputError, match="another zaugnet run is writing it") as err:
                predict_large(path, out, PLAN, "linear", **OPTIONS, **kwargs)
            assert err.value.where == str(out)
        assert markers(out) == 1  # the refused runs discarded nothing
        go.touch()
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr[-3000:]
    np.testing.assert_array_equal(read_ome_zarr(out).data, linear(data))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["go", "in.ome.zarr", "out.ome.zarr", "started"]


def test_lock_left_by_a_killed_run_does_not_block_the_next(source, tmp_path, monkeypatch) -> None:
    path, data = source
    out = tmp_path / "out.ome.zarr"
    killed = start_writer(path, out, "os.kill(os.getpid(), signal.SIGKILL)")
    _, stderr = killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL, stderr[-3000:]
    assert (tmp_path / "out.ome.zarr.lock").is_file() and markers(out) == 1  # killed holding the lock

    assert run_counting(monkeypatch, path, out, PLAN, "linear") == N_BLOCKS - 1  # resumed, not refused
    np.testing.assert_array_equal(read_ome_zarr(out).data, linear(data))
    assert not (tmp_path / "out.ome.zarr.lock").exists() and not (tmp_path / "out.ome.zarr.partial").exists()


# --- resume only what the same model made from the same data ----------------------------------------


def mean_net(x):  # a stand-in network: the mean of the two normalised slices
    return x[:, :2].mean(1, keepdim=True)


def first_net(x):  # another one: the first slice
    return x[:, :1]


def test_resume_with_other_weights_is_refused(source, tmp_path, monkeypatch) -> None:
    """Networks without a state_dict (e.g. ONNX sessions) are told apart by the sha256 of their weights file."""
    path, _ = source
    out = tmp_path / "out.ome.zarr"
    model_a = ModelInterpolator(mean_net, "zaugnet+", weights_sha256="a" * 64)
    model_b = ModelInterpolator(first_net, "zaugnet+", weights_sha256="b" * 64)
    run_counting(monkeypatch, path, out, PLAN, model_a, stop_after=3)
    with pytest.raises(InputError, match=rf"out\.ome\.zarr\.partial: holds an unfinished run with other settings "
                                         rf"\(method or model weights\); {RESTART}"):
        predict_large(path, out, PLAN, model_b, **OPTIONS)
    assert markers(out) == 3 and not out.exists()

    again_a = ModelInterpolator(mean_net, "zaugnet+", weights_sha256="a" * 64)  # the same weights: resumed
    assert run_counting(monkeypatch, path, out, PLAN, again_a) == N_BLOCKS - 3
    once = predict_large(path, tmp_path / "once.ome.zarr", PLAN, model_a, **OPTIONS)
    np.testing.assert_array_equal(read_ome_zarr(out).data, read_ome_zarr(once).data)


def test_model_that_nothing_identifies_is_never_resumed(source, tmp_path, monkeypatch) -> None:
    path, _ = source
    out = tmp_path / "out.ome.zarr"
    unknown_a = ModelInterpolator(mean_net, "zaugnet+")  # no state_dict, no weights_sha256
    unknown_b = ModelInterpolator(first_net, "zaugnet+")
    run_counting(monkeypatch, path, out, PLAN, unknown_a, stop_after=3)
    with pytest.raises(InputError, match=rf"holds an unfinished run with a model that nothing identifies .*{RESTART}"):
        predict_large(path, out, PLAN, unknown_b, **OPTIONS)
    assert markers(out) == 3

    assert run_counting(monkeypatch, path, out, PLAN, unknown_b, restart=True) == N_BLOCKS
    once = predict_large(path, tmp_path / "once.ome.zarr", PLAN, unknown_b, **OPTIONS)
    np.testing.assert_array_equal(read_ome_zarr(out).data, read_ome_zarr(once).data)


def test_resume_after_the_input_data_changed_is_refused(source, tmp_path, monkeypatch) -> None:
    path, data = source
    out = tmp_path / "out.ome.zarr"
    run_counting(monkeypatch, path, out, PLAN, "linear", stop_after=3)
    assert run_counting(monkeypatch, path, out, PLAN, "linear") == N_BLOCKS - 3  # unchanged input: resumed
    np.testing.assert_array_equal(read_ome_zarr(out).data, linear(data))

    out2 = tmp_path / "out2.ome.zarr"
    run_counting(monkeypatch, path, out2, PLAN, "linear", stop_after=3)
    metadata = (path / "0" / ".zarray").read_bytes()
    # new data (same shape, dtype and metadata) in slice 1 over block (0, 0): the midpoint there is already
    # done from the old data, the copy of slice 1 is not: resuming would mix old and new
    data[1, :64, :64] = 7
    zarr.open_array(str(path / "0"), mode="r+")[1, :64, :64] = 7
    assert (path / "0" / ".zarray").read_bytes() == metadata
    with pytest.raises(InputError, match=rf"out2\.ome\.zarr\.partial: holds an unfinished run with other settings "
                                         rf"\(input data\); {RESTART}"):
        predict_large(path, out2, PLAN, "linear", **OPTIONS)
    assert run_counting(monkeypatch, path, out2, PLAN, "linear", restart=True) == N_BLOCKS
    np.testing.assert_array_equal(read_ome_zarr(out2).data, linear(data))


# --- restart, overwrite ----------------------------------------------------------------------------


def test_restart_and_overwrite_discard_an_unfinished_run(source, tmp_path, monkeypatch) -> None:
    path, data = source
    out = tmp_path / "out.ome.zarr"
    for kwargs in ({"restart": True}, {"overwrite": True}):  # overwrite: out exists, from the first round
        run_counting(monkeypatch, path, out, PLAN, "linear", stop_after=3, **kwargs)
        assert markers(out) == 3
        assert run_counting(monkeypatch, path, out, PLAN, "linear", **kwargs) == N_BLOCKS  # nothing reused
        np.testing.assert_array_equal(read_ome_zarr(out).data, linear(data))
        assert not (tmp_path / "out.ome.zarr.partial").exists()


# --- write errors ----------------------------------------------------------------------------------


def test_output_folder_that_is_a_file_names_the_output(source, tmp_path) -> None:
    path, _ = source
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    out = tmp_path / "notes.txt" / "out.ome.zarr"
    with pytest.raises(InputError, match=r"notes\.txt/out\.ome\.zarr: cannot write .*notes\.txt") as err:
        predict_large(path, out, PLAN, "linear", **OPTIONS)
    assert err.value.where == str(out)
    assert (tmp_path / "notes.txt").read_text() == "a file, not a folder"


def test_full_disk_keeps_the_unfinished_output_for_resume(source, tmp_path, monkeypatch) -> None:
    """A full disk, simulated by a file size limit (RLIMIT_FSIZE, SIGXFSZ ignored: writes fail with EFBIG) under
    the size of a chunk (about 8 kB) but above that of the metadata files: an error naming the output, the
    unfinished run kept, and a run without the limit resumes it to the same bytes."""
    path, data = source
    out = tmp_path / "out.ome.zarr"
    code = f"""
        import resource, signal, sys
        from zaugnet.predict.outofcore import predict_large
        from zaugnet.errors import InputError
        from zaugnet.predict.plan import make_plan

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            predict_large({str(path)!r}, {str(out)!r}, make_plan(3, 0.6, factor=2), "linear", **{OPTIONS!r})
        except InputError as exc:
            print(exc)
            sys.exit(3)
    """
    full = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120)
    assert full.returncode == 3, full.stderr[-3000:]
    assert full.stdout.startswith(f"{out}: no space left on device (File too large); the unfinished output "
                                  f"{out}.partial is kept: free some space and run the same command again to resume")
    partial = tmp_path / "out.ome.zarr.partial"
    assert not out.exists() and json.loads((partial / ".zaugnet" / "manifest.json").read_text())["method"] == "linear"

    assert run_counting(monkeypatch, path, out, PLAN, "linear") == N_BLOCKS
    np.testing.assert_array_equal(read_ome_zarr(out).data, linear(data))
    assert not partial.exists()
