"""``benchmarks/train_scaling.py`` end to end with the tiny network: torchrun with 1 and 2 CPU processes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from support import TINY_SET, benchmark_script


@pytest.mark.slow
def test_reports_throughput_per_process_count_at_one_global_batch(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    tiny = [a for item in TINY_SET if not item.startswith("train.") for a in ("--set", item)]
    benchmark_script("train_scaling").main(["--nproc", "1", "2", "--amp", "off", "--steps", "4", "--warmup", "2",
                                            "--stack-size", "48", "--global-batch", "4", "--micro-batch", "2",
                                            *tiny, "-o", str(tmp_path)])
    with (tmp_path / "train_scaling.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["processes"], r["accumulate"], r["amp"]) for r in rows] == [("1", "2", "off"), ("2", "1", "off")]
    for row in rows:  # the same global batch at every process count, and the figures agree with each other
        assert float(row["seconds_per_step"]) > 0
        assert float(row["samples_per_second"]) == pytest.approx(4 / float(row["seconds_per_step"]), rel=0.01)
    assert float(rows[0]["speedup"]) == 1.0
    assert float(rows[1]["speedup"]) == pytest.approx(
        float(rows[1]["samples_per_second"]) / float(rows[0]["samples_per_second"]), abs=0.01)
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
