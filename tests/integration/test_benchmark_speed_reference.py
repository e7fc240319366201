"""``benchmarks/speed_reference.py``: the bfloat16 rows are run only when asked (``--bf16 auto`` asks only where
the CPU computes bfloat16 natively: emulated, it was 95x slower than float32 on an AVX2 CPU)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from support import benchmark_script


def test_bfloat16_rows_and_peak_only_when_asked(tmp_path: Path) -> None:
    bench = benchmark_script("speed_reference")
    net = torch.nn.Conv2d(2, 1, 3, padding=1).eval()
    common = {"with_compile": False, "with_onnx": False, "workdir": tmp_path, "threads": 1}
    without = bench.runtimes(net, torch.rand(1, 2, 16, 16), with_bf16=False, **common)
    both = bench.runtimes(net, torch.rand(1, 2, 16, 16), with_bf16=True, **common)
    assert set(both) - set(without) == {"bf16 autocast", "oneDNN bf16 fp-math"}
    assert not any("bf16" in name for name in without)
    peak = bench.conv_peak(1, 1, with_bf16=False)
    assert peak["float32"] > 0 and math.isnan(peak["bfloat16"])
