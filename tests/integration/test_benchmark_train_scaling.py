"""``benchmarks/train_scaling.py``: its figures from known step times (torchrun stood in for), and end to end with the
tiny network (torchrun with 1 and 2 CPU processes)."""

from __future__ import annotations

import csv
import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from support import TINY_SET, benchmark_script


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_throughput_speedup_and_efficiency_from_known_step_times(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """torchrun is replaced by a stand-in that writes each run's ``metrics.csv`` with chosen clocks at steps 2
    (the warm-up) and 4, so every figure is known: s/step = (t4 - t2) / 2, samples/s = 4 / s/step, speed-up over
    the 1-process run with the same AMP setting, efficiency = speed-up / processes."""
    clocks = {(1, "true"): (10.0, 11.0), (2, "true"): (20.0, 20.5), (1, "false"): (5.0, 7.0), (2, "false"): (3.0, 4.25)}
    calls = []

    def torchrun(cmd: list[str], capture_output: bool, text: bool, env: dict[str, str]) -> subprocess.CompletedProcess:
        nproc = int(next(a for a in cmd if a.startswith("--nproc-per-node=")).partition("=")[2])
        sets = dict(cmd[i + 1].split("=", 1) for i, arg in enumerate(cmd) if arg == "--set")
        run = Path(cmd[cmd.index("-o") + 1])
        run.mkdir(parents=True)
        t2, t4 = clocks[(nproc, sets["train.amp"])]
        (run / "metrics.csv").write_text(f"step,seconds,loss_g\n2,{t2},0.5\n4,{t4},0.4\n")
        calls.append((nproc, sets["train.batch_size"], sets["train.accumulate"], sets["train.amp"],
                      sets["train.val_every"], env["OMP_NUM_THREADS"]))
        amp = " (bfloat16 autocast)" if sets["train.amp"] == "true" else ""
        return subprocess.CompletedProcess(cmd, 0, "", f"... zaugnet (small) on cpu{amp}, {nproc} process(es)\n")

    script = benchmark_script("train_scaling")
    monkeypatch.setattr(script, "subprocess", SimpleNamespace(run=torchrun))
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    script.main(["--nproc", "1", "2", "--amp", "on", "off", "--steps", "4", "--warmup", "2", "--stack-size", "32",
                 "--global-batch", "4", "--micro-batch", "2", "-o", str(tmp_path)])
    # each process takes 4 / N samples per step in micro-batches of 2, with cores // N threads
    assert calls == [(1, "4", "2", "true", "2", "8"), (2, "2", "1", "true", "2", "4"),
                     (1, "4", "2", "false", "2", "8"), (2, "2", "1", "false", "2", "4")]
    rows = _csv(tmp_path / "train_scaling.csv")
    figures = ("processes", "threads_per_process", "amp", "accumulate", "seconds_per_step", "samples_per_second",
               "speedup", "efficiency")
    assert [tuple(r[k] for k in figures) for r in rows] == [
        ("1", "8", "bf16", "2", "0.5", "8.0", "1.0", "1.0"),
        ("2", "4", "bf16", "1", "0.25", "16.0", "2.0", "1.0"),
        ("1", "8", "off", "2", "1.0", "4.0", "1.0", "1.0"),
        ("2", "4", "off", "1", "0.625", "6.4", "1.6", "0.8"),
    ]
    md = (tmp_path / "train_scaling.md").read_text()
    assert md.strip() == capsys.readouterr().out.strip()
    assert "| cpu | 2 | 4 | off | 4 | 2 | 1 | 0.625 | 6.4 | 1.6 | 0.8 |" in md
    assert (tmp_path / "train_scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_reports_throughput_per_process_count_at_one_global_batch(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    tiny = [a for item in TINY_SET if not item.startswith("train.") for a in ("--set", item)]
    start = time.monotonic()
    benchmark_script("train_scaling").main(["--nproc", "1", "2", "--amp", "off", "--steps", "4", "--warmup", "2",
                                            "--stack-size", "48", "--global-batch", "4", "--micro-batch", "2",
                                            *tiny, "-o", str(tmp_path)])
    elapsed = time.monotonic() - start
    rows = _csv(tmp_path / "train_scaling.csv")
    assert [(r["processes"], r["accumulate"], r["amp"], r["global_batch"], r["micro_batch"]) for r in rows] == [
        ("1", "2", "off", "4", "2"), ("2", "1", "off", "4", "2")]
    for row in rows:  # the 2 timed steps of each run took part of the benchmark's own wall time
        assert 0 < 2 * float(row["seconds_per_step"]) < elapsed, (row, elapsed)
    assert rows[0]["speedup"] == rows[0]["efficiency"] == "1.0"  # 1 process against itself
    assert (tmp_path / "train_scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "train_scaling.md").read_text()
    assert md.strip() == capsys.readouterr().out.strip() and "| cpu | 2 | 1 | off | 4 | 2 | 1 |" in md


def test_refuses_batches_that_do_not_split_and_partial_critic_cycles(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        benchmark_script("train_scaling").main(["--nproc", "1", "3", "--global-batch", "16", "--micro-batch", "8"])
    assert exit_info.value.code == 2
    assert "--global-batch 16 is not a multiple of 3 processes x --micro-batch 8" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        # 2 timed steps, n_critic 5
        benchmark_script("train_scaling").main(["--preset", "paper", "--steps", "4", "--warmup", "2"])
    assert "must be a multiple of n_critic (5)" in capsys.readouterr().err
