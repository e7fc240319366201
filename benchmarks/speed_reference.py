"""Speed against the reference implementation: network forward, predictor and end-to-end CLI, in one run.

Usage::

    python benchmarks/speed_reference.py [-o benchmarks/results] [--threads 2] [--repeats 3]
                                         [--sizes 256 1024] [--batches 1 4] [--compile] [--no-onnx]
                                         [--no-cli] [--bf16 auto|on|off] [--stem speed_reference] [--quick]

Four parts, on fixed inputs (a synthetic 9 x 1024 x 1024 membrane stack, ``zaugnet.phantoms.simulate_stack``
seed 0, float32, whose slices also feed the network and predictor parts):

1. **Convolution peak**: GFLOP/s of single 3x3 convolutions shaped like the paper student's trunks
   (240 channels at 64 x 64, 150 at 128 x 128, 90 at 256 x 256), float32 and bfloat16; the best is the
   "measured peak" the network's throughput is a fraction of.
2. **Network forward** of the paper-preset ZAugNet student (``build_student``, untrained, seed 0: speed
   does not depend on the weights) at each size and batch, per runtime: float32 eager, channels_last,
   TorchScript (trace + freeze; script + freeze + ``optimize_for_inference``), ``torch.compile``
   (inductor; with ``--compile``, at the first size and batch only: it compiles for minutes per shape
   here), ONNX Runtime (``ORT_ENABLE_ALL``), bfloat16
   autocast and oneDNN's bfloat16 fp-math mode for float32 convolutions (bf16 inputs, fp32 accumulation);
   the bfloat16 rows and peak only where the CPU runs bfloat16 natively (AMX or AVX512-BF16), unless
   ``--bf16 on``: emulated, one 256 x 256 forward under bfloat16 autocast took 26.3 s against 0.28 s in
   float32 on an AVX2-only AMD EPYC (2 threads).
   Each row: pairs/s (median of interleaved repeats), GFLOP/s and its fraction of the float32 and bfloat16
   peaks, peak RSS during the row, and the max deviation from float32 eager on the same input as a
   fraction of that output's range. **The reference**: the authors' generator has the same architecture
   and FLOPs as this student (16.33 GFLOP per 256 x 256 pair) and was measured at the same speed (issue 19:
   10.4 vs 10.5 pairs/s); it is not run here. Its figure is this student run the reference's way: float32
   eager, batch 1, the whole slice, no tiling ("reference manner").
3. **Predictor**: ``ModelInterpolator.predict_windows`` (normalisation, tiling, network, back to units) on
   four 1024 x 1024 gaps of the stack, for the paper student and the shipped default model, with the
   settings before issue 19 (tile 512, halo 128, batches of 4 tiles, contiguous memory: "today's float32
   results", the reference of ``max_dev``), today's defaults, today's defaults with channels-last (opt-in),
   and (paper student) today's defaults with a frozen TorchScript network.
4. **End to end**: ``zaugnet predict --method model`` on the stack (9 -> 17 slices) in a fresh process
   per run, with the shipped default model (``bioimageio_models/zaugnet_plus``) and an untrained
   paper-preset ZAugNet checkpoint, with the defaults and with ``--tile 512``, broken down by phase:
   imports, model loading, reading, self-check (none with ``--method model``), normalisation/tiling/copies,
   network, writing, the rest; peak RSS; deviation of the new slices from the defaults'.

Timings are wall-clock medians; other processes on the machine slow everything alike (the load average
at the start and end is printed). Writes ``STEM.md`` and ``STEM.csv`` (``--stem``, default
``speed_reference``) into ``-o`` (default ``benchmarks/results``). The default run (2 threads, no ``--compile``)
takes about 9 minutes on this project's idle 2-core CPU, 17 with ``--threads 1``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: Convolutions (channels, side) shaped like the paper student's three trunks at 1024 x 1024.
PEAK_SHAPES = ((240, 64), (150, 128), (90, 256))
#: The predictor's settings before issue 19: "today's float32 results" are their output.
BEFORE = {"tile": 512, "halo": 128, "batch_size": 4, "max_batch_pixels": None, "channels_last": False}
#: Max deviation (fraction of the output range) a faster default may have from today's float32 results.
PRECISION = 1e-4
FIELDS = ("part", "model", "runtime", "size", "batch", "tile", "halo", "pairs_per_s", "best_pairs_per_s", "s_per_pair",
          "vs_reference",
          "gflop_per_pair", "gflop_per_s", "frac_fp32_peak", "frac_bf16_peak", "max_dev", "peak_rss_mb",
          "prepare_s", "phases", "note")


# ------------------------------------------------------------------------------------ memory
def _status(key: str) -> float:
    """A ``/proc/self/status`` field in MB (0 where there is no ``/proc``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS counter (``VmHWM``) to the current RSS, where Linux allows it."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def load_average() -> str:
    """The 1-minute load average, or ``?``."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


# ------------------------------------------------------------------------------------ inputs
def make_stack(path: Path, shape: tuple[int, int, int]) -> Any:
    """The fixed synthetic stack (membrane phantom, seed 0, float32), written to ``path`` once."""
    import numpy as np

    from zaugnet.io.tiff import read_stack, write_stack
    from zaugnet.phantoms import simulate_stack

    if not path.exists():
        write_stack(path, simulate_stack(shape, kind="membrane", seed=0, dtype="float32"))
    return np.asarray(read_stack(path).data, dtype=np.float32)


def network_inputs(stack: Any, size: int, batch: int) -> Any:
    """``batch`` consecutive pairs of the stack, centre-cropped to ``size``, each normalised jointly to [0, 1]."""
    import numpy as np
    import torch

    h, w = stack.shape[1:]
    y0, x0 = (h - size) // 2, (w - size) // 2
    pairs = []
    for i in range(batch):
        pair = stack[i:i + 2, y0:y0 + size, x0:x0 + size]
        lo, hi = float(pair.min()), float(pair.max())
        pairs.append((pair - lo) / max(hi - lo, 1e-12))
    return torch.from_numpy(np.ascontiguousarray(np.stack(pairs), dtype=np.float32))


def paper_student(variant: str = "zaugnet") -> Any:
    """The paper-preset student, untrained (seed 0), in eval mode."""
    import torch
    from zaugnet.training.config import build_config
    from zaugnet.training.nets import build_student

    torch.manual_seed(0)
    return build_student(build_config({"preset": "paper", "net": {"variant": variant}}).net).eval()


# ------------------------------------------------------------------------------------ timing
def median_times(calls: dict[str, Callable[[], Any]], repeats: int, warmup: int = 2,
                 best: dict[str, float] | None = None) -> dict[str, float]:
    """Median seconds per call of each callable, the repeats interleaved across callables after warm-ups.

    ``best``, if given, receives each callable's fastest time.
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
    if best is not None:
        best.update({name: min(values) for name, values in times.items()})
    return {name: statistics.median(values) for name, values in times.items()}


def deviation(out: Any, ref: Any) -> float:
    """Max |out - ref| as a fraction of ``ref``'s range."""
    import numpy as np

    out, ref = (np.asarray(a.float().numpy() if hasattr(a, "float") else a, dtype=np.float64) for a in (out, ref))
    return float(np.abs(out - ref).max() / max(float(ref.max() - ref.min()), 1e-30))


# ------------------------------------------------------------------------------------ part 1
def conv_peak(threads: int, repeats: int, with_bf16: bool = True) -> dict[str, float]:
    """Best GFLOP/s of the :data:`PEAK_SHAPES` 3x3 convolutions, float32 and bfloat16 (native tensors;
    NaN for bfloat16 unless ``with_bf16``)."""
    import torch

    best: dict[str, float] = {}
    dtypes = [(torch.float32, "float32")] + ([(torch.bfloat16, "bfloat16")] if with_bf16 else [])
    with torch.no_grad():
        for dtype, label in dtypes:
            for channels, side in PEAK_SHAPES:
                conv = torch.nn.Conv2d(channels, channels, 3, 1, 1).to(dtype)
                x = torch.rand(1, channels, side, side).to(dtype)
                seconds = median_times({"conv": lambda c=conv, t=x: c(t)}, max(repeats, 5), warmup=3)["conv"]
                gflops = 2 * channels * channels * 9 * side * side / seconds / 1e9
                best[label] = max(best.get(label, 0.0), gflops)
    best.setdefault("bfloat16", float("nan"))
    return best


# ------------------------------------------------------------------------------------ part 2
@contextlib.contextmanager
def onednn_bf16() -> Iterator[None]:
    """oneDNN's bfloat16 fp-math mode for float32 convolutions (inputs rounded to bf16, fp32 accumulation)."""
    import torch

    conv = torch.backends.mkldnn.conv
    before = conv.fp32_precision
    conv.fp32_precision = "bf16"
    try:
        yield
    finally:
        conv.fp32_precision = before


def runtimes(net: Any, example: Any, *, with_compile: bool, with_onnx: bool, with_bf16: bool,
             workdir: Path, threads: int) -> dict[str, tuple[Callable[[Any], Any], float, str]]:
    """``name -> (forward(x), seconds to prepare, note)`` for each runtime of ``net`` (the two bfloat16 ones
    only ``with_bf16``)."""
    import copy

    import torch

    out: dict[str, tuple[Callable[[Any], Any], float, str]] = {}
    out["float32 eager"] = (net, 0.0, "")

    t0 = time.perf_counter()
    cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    out["channels_last"] = (lambda x: cl(x.contiguous(memory_format=torch.channels_last)),
                            time.perf_counter() - t0, "")

    t0 = time.perf_counter()
    traced = torch.jit.freeze(torch.jit.trace(net, example, check_trace=False))
    out["trace + freeze"] = (traced, time.perf_counter() - t0, "TorchScript")

    t0 = time.perf_counter()
    scripted = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.script(net)))
    out["script + freeze + ofi"] = (scripted, time.perf_counter() - t0, "TorchScript, optimize_for_inference")

    if with_compile:
        compiled = torch.compile(net, dynamic=False)
        out["torch.compile"] = (compiled, float("nan"), "inductor; compiled on first call of each shape")

    if with_onnx:
        try:
            import onnxruntime as ort
            from zaugnet.export.onnx import export_onnx

            t0 = time.perf_counter()
            path = export_onnx(net, workdir / "paper_student.onnx", example)
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            out["onnxruntime"] = (lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0]),
                                  time.perf_counter() - t0, f"ORT {ort.__version__}, ORT_ENABLE_ALL")
        except Exception as err:  # noqa: BLE001 - an optional runtime: report it and go on
            print(f"onnxruntime skipped: {err.__class__.__name__}: {err}", file=sys.stderr)

    if not with_bf16:
        return out

    def bf16_autocast(x: Any) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return net(x)

    out["bf16 autocast"] = (bf16_autocast, 0.0, "opt-in only: see max_dev")

    def bf16_fpmath(x: Any) -> Any:
        with onednn_bf16():
            return net(x)

    out["oneDNN bf16 fp-math"] = (bf16_fpmath, 0.0, "float32 convs on bf16 inputs, fp32 accumulation")
    return out


def network_part(stack: Any, sizes: Sequence[int], batches: Sequence[int], repeats: int,
                 peak: dict[str, float], args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    """Rows of part 2: every runtime at every size and batch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net = paper_student()
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            x = network_inputs(stack, min(256, stack.shape[-1]), 1)
            net(x)
        gflop_256 = counter.get_total_flops() / 1e9 * (256 / x.shape[-1]) ** 2
        forwards = runtimes(net, network_inputs(stack, 256, 1), with_compile=args.compile,
                            with_onnx=not args.no_onnx, with_bf16=args.with_bf16, workdir=workdir,
                            threads=args.threads)
        reference_pps: dict[int, float] = {}
        for size in sizes:
            for batch in batches:
                x = network_inputs(stack, size, batch)
                ref = net(x)
                gflop = gflop_256 * (size / 256) ** 2
                results: dict[str, dict[str, Any]] = {}
                here = {n: v for n, v in forwards.items()  # torch.compile compiles anew for each shape
                        if n != "torch.compile" or (size, batch) == (sizes[0], batches[0])}
                for name, (forward, prepare, note) in here.items():  # warm-up, deviation and peak memory
                    reset_peak_rss()
                    t0 = time.perf_counter()
                    y = forward(x)
                    first = time.perf_counter() - t0
                    forward(x)
                    results[name] = {"max_dev": deviation(y, ref), "peak_rss_mb": round(_status("VmHWM")),
                                     "prepare_s": round(first if math.isnan(prepare) else prepare, 2), "note": note}
                label = f"{size} x {size}, batch {batch}"
                print(f"  timing {label} ({len(here)} runtimes x {repeats} repeats, load {load_average()})",
                      file=sys.stderr, flush=True)
                fastest: dict[str, float] = {}
                seconds = median_times({n: functools.partial(f, x) for n, (f, _, _) in here.items()},
                                       repeats, warmup=0, best=fastest)
                for name, sec in seconds.items():
                    pps = batch / sec
                    if name == "float32 eager" and batch == 1:
                        reference_pps[size] = pps
                    gps = gflop * pps
                    rows.append({"part": "network", "model": "paper student", "runtime": name, "size": size,
                                 "batch": batch, "pairs_per_s": pps, "best_pairs_per_s": batch / fastest[name],
                                 "s_per_pair": 1 / pps,
                                 "gflop_per_pair": gflop, "gflop_per_s": gps, "frac_fp32_peak": gps / peak["float32"],
                                 "frac_bf16_peak": gps / peak["bfloat16"], **results[name]})
        for row in rows:
            ref_pps = reference_pps.get(row["size"])
            row["vs_reference"] = row["pairs_per_s"] / ref_pps if ref_pps else None
            if row["runtime"] == "float32 eager" and row["batch"] == 1:
                row["note"] = "REFERENCE MANNER (stands for the authors' generator: same architecture and FLOPs)"
    return rows


# ------------------------------------------------------------------------------------ part 3
def predictor_part(stack: Any, repeats: int) -> list[dict[str, Any]]:
    """Rows of part 3: ``predict_windows`` on four 1024 x 1024 gaps per model and setting."""
    import dataclasses

    import numpy as np
    import torch
    from zaugnet.export import load_interpolator
    from zaugnet.export.load import default_model

    from zaugnet.predict.interpolator import ModelInterpolator

    windows = np.stack([stack[i:i + 2] for i in range(4)])
    z = [0.5] * len(windows)
    # each setting its own network: channels_last converts a module in place
    models: dict[str, dict[str, ModelInterpolator]] = {
        "paper student": {
            "before issue 19 (512/128/4)": ModelInterpolator(paper_student(), "zaugnet", **BEFORE),
            "default now": ModelInterpolator(paper_student(), "zaugnet"),
            "default now + channels_last": ModelInterpolator(paper_student(), "zaugnet", channels_last=True)},
        "shipped default (zaugnet_plus, small)": {
            "before issue 19 (512/128/4)": load_interpolator(default_model(), **BEFORE),
            "default now": load_interpolator(default_model()),
            "default now + channels_last": load_interpolator(default_model(), channels_last=True)},
    }
    with torch.no_grad():
        scripted = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.script(paper_student())))
    models["paper student"]["default now, script + freeze + ofi"] = dataclasses.replace(
        models["paper student"]["default now"], network=scripted)

    def run(model: ModelInterpolator) -> Any:
        return np.concatenate([model.predict_windows(windows[i:i + model.batch_size], z[i:i + model.batch_size])
                               for i in range(0, len(windows), model.batch_size)])

    rows = []
    for label, settings in models.items():
        outputs: dict[str, Any] = {}
        peaks: dict[str, float] = {}
        for name, model in settings.items():
            reset_peak_rss()
            outputs[name] = run(model)
            peaks[name] = _status("VmHWM")
        print(f"  timing the predictor, {label} ({len(settings)} settings x {repeats} repeats, "
              f"load {load_average()})", file=sys.stderr, flush=True)
        fastest: dict[str, float] = {}
        seconds = median_times({n: functools.partial(run, m) for n, m in settings.items()}, repeats, warmup=0,
                               best=fastest)
        ref = outputs["before issue 19 (512/128/4)"]
        for name, model in settings.items():
            pps = len(windows) / seconds[name]
            cl = "channels_last" if model._channels_last else "contiguous"
            rows.append({"part": "predictor", "model": label, "runtime": name, "size": windows.shape[-1],
                         "batch": model.batch_size, "tile": model.tile, "halo": model.halo, "pairs_per_s": pps,
                         "best_pairs_per_s": len(windows) / fastest[name], "s_per_pair": 1 / pps,
                         "max_dev": deviation(outputs[name], ref), "peak_rss_mb": round(peaks[name]),
                         "note": f"tile {model.tile}, halo {model.halo}, batch {model.batch_size}, "
                                 f"max_batch_pixels {model.max_batch_pixels}, {cl}"})
    return rows


# ------------------------------------------------------------------------------------ part 4
class Phases:
    """Exclusive wall time per phase of wrapped functions (a nested call's time counts for its own phase)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._open: list[float] = []

    def wrap(self, owner: Any, attribute: str, phase: str) -> None:
        """Replace ``owner.attribute`` by a timed wrapper that books its exclusive time to ``phase``."""
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            self._open.append(0.0)
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                inner = self._open.pop()
                self.seconds[phase] = self.seconds.get(phase, 0.0) + elapsed - inner
                if self._open:
                    self._open[-1] += elapsed

        setattr(owner, attribute, timed)


def cli_child(report: str, argv: list[str]) -> int:
    """In a fresh process: run ``zaugnet`` with ``argv``, timing its phases; write them to ``report`` (JSON)."""
    t_start = time.perf_counter()
    import zaugnet.export

    import zaugnet.io.tiff
    from zaugnet import cli
    from zaugnet.evaluate.selfcheck import AutoMethod
    from zaugnet.predict.interpolator import ModelInterpolator

    phases = Phases()
    phases.seconds["imports"] = time.perf_counter() - t_start
    phases.wrap(zaugnet.export, "load_interpolator", "load model")
    phases.wrap(zaugnet.io.tiff, "read_stack", "read")
    phases.wrap(AutoMethod, "resolve", "self-check")
    phases.wrap(ModelInterpolator, "predict_windows", "normalise, tile, copy")
    phases.wrap(ModelInterpolator, "_run", "network")
    phases.wrap(zaugnet.io.tiff, "write_stack", "write")
    t0 = time.perf_counter()
    status = cli.main(argv)
    total = time.perf_counter() - t0
    phases.seconds["other (plan, checks, assembling)"] = total - sum(
        v for k, v in phases.seconds.items() if k != "imports")
    Path(report).write_text(json.dumps({"status": status, "seconds": phases.seconds, "cli_s": total,
                                        "peak_rss_mb": _status("VmHWM")}))
    return status


def cli_part(stack_path: Path, workdir: Path, threads: int) -> list[dict[str, Any]]:
    """Rows of part 4: ``zaugnet predict --method model`` per model and tile setting, one process each."""
    import numpy as np
    import torch
    from zaugnet.training.checkpoint import save_checkpoint
    from zaugnet.training.config import build_config
    from zaugnet.training.nets import Generator

    from zaugnet.io.tiff import read_stack

    config = build_config({"preset": "paper"})
    torch.manual_seed(0)
    paper = save_checkpoint(workdir / "paper_untrained.pt", {"config": config.to_dict(),
                                                              "generator": Generator(config.net).state_dict()})
    models = {"shipped default (zaugnet_plus, small)": [], "paper student (untrained)": ["--model", str(paper)]}
    tiles = {"defaults": [], "--tile 512 (the earlier default tile)": ["--tile", "512"]}
    n_in = read_stack(stack_path).data.shape[0]
    rows = []
    for model, model_args in models.items():
        first: Any = None
        for tiling, tile_args in tiles.items():
            out = workdir / f"out_{len(rows)}.tif"
            report = workdir / f"phases_{len(rows)}.json"
            argv = ["predict", str(stack_path), "-o", str(out), "--method", "model", "--threads", str(threads),
                    "--quiet", "--overwrite", *model_args, *tile_args]
            print(f"  zaugnet {shlex.join(argv)} (load {load_average()})", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--cli-child", str(report), "--", *argv], check=True,
                           stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            result = json.loads(report.read_text())
            new = np.asarray(read_stack(out).data, dtype=np.float32)[1::2]
            first = new if first is None else first
            n_new = n_in - 1
            phases = {k: round(v, 2) for k, v in result["seconds"].items()}
            rows.append({"part": "cli", "model": model, "runtime": tiling, "size": new.shape[-1], "batch": None,
                         "pairs_per_s": n_new / wall, "s_per_pair": wall / n_new,
                         "max_dev": deviation(new, first), "peak_rss_mb": round(result["peak_rss_mb"]),
                         "phases": phases,
                         "note": f"process wall {wall:.1f} s for {n_new} new slices; max_dev: vs the defaults"})
    return rows


# ------------------------------------------------------------------------------------ report
def _fmt(value: Any, digits: int = 3) -> str:
    """A table cell: numbers to ``digits`` significant digits, None as empty."""
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.1e}" if value and abs(value) < 1e-3 else f"{value:.{digits}g}"
    return str(value)


def markdown(rows: list[dict[str, Any]], header: list[str]) -> str:
    """The report: hardware line, command, then one table per part."""
    lines = [*header, ""]
    net = [r for r in rows if r["part"] == "network"]
    if net:
        per_256 = net[0]["gflop_per_pair"] * (256 / net[0]["size"]) ** 2
        lines += [f"## Network forward: paper student ({per_256:.2f} GFLOP per 256 x 256 pair, FlopCounterMode)", "",
                  "`vs ref`: pairs/s over the reference manner's (float32 eager, batch 1) at the same size. "
                  "`max dev`: max |output - float32 eager output| / output range. `peak RSS`: the process's "
                  "peak during the row's first two calls (counter reset before).", "",
                  "| size | batch | runtime | pairs/s | best pairs/s | vs ref | GFLOP/s | of fp32 peak | "
                  "of bf16 peak | "
                  "max dev | peak RSS (MB) | prepare (s) | note |",
                  "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        lines += [f"| {r['size']} | {r['batch']} | {r['runtime']} | {_fmt(r['pairs_per_s'])} | "
                  f"{_fmt(r['best_pairs_per_s'])} | "
                  f"{_fmt(r['vs_reference'])} | {_fmt(r['gflop_per_s'])} | {_fmt(r['frac_fp32_peak'], 2)} | "
                  f"{_fmt(r['frac_bf16_peak'], 2)} | {_fmt(r['max_dev'], 2)} | {r['peak_rss_mb']} | "
                  f"{_fmt(r.get('prepare_s'))} | {r.get('note', '')} |" for r in net]
        lines.append("")
    pred = [r for r in rows if r["part"] == "predictor"]
    if pred:
        side = pred[0]["size"]
        lines += [f"## Predictor: `ModelInterpolator.predict_windows`, four {side} x {side} gaps", "",
                  "`vs ref`: pairs/s over the reference manner's network forward at 1024 x 1024 (paper student "
                  "only). "
                  "`max dev`: vs the settings before issue 19 (today's float32 results), over the output range.", "",
                  "| model | setting | pairs/s | best pairs/s | s per new slice | vs ref | max dev | peak RSS (MB) | "
                  "settings |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        lines += [f"| {r['model']} | {r['runtime']} | {_fmt(r['pairs_per_s'])} | {_fmt(r['best_pairs_per_s'])} | "
                  f"{_fmt(r['s_per_pair'])} | {_fmt(r.get('vs_reference'))} | {_fmt(r['max_dev'], 2)} | "
                  f"{r['peak_rss_mb']} | {r['note']} |" for r in pred]
        lines.append("")
    cli = [r for r in rows if r["part"] == "cli"]
    if cli:
        names = list(dict.fromkeys(k for r in cli for k in r["phases"]))
        side = cli[0]["size"]
        lines += [f"## End to end: `zaugnet predict --method model`, 9 x {side} x {side} float32 stack -> 17 slices",
                  "",
                  "Seconds per phase (exclusive; `network` is the forward passes with their tensor copies, "
                  "`normalise, tile, copy` the rest of `predict_windows`). s per new slice: the whole process "
                  "(imports included) over the 8 new slices; `vs ref`: the reference manner's network forward "
                  "alone over it (no imports, I/O or normalisation in the reference figure). max dev: new slices "
                  "vs the same model's run with the "
                  "defaults, over their range.", "",
                  "| model | options | s per new slice | vs ref | " + " | ".join(names)
                  + " | max dev | peak RSS (MB) |",
                  "|---|---|---:|---:|" + "---:|" * len(names) + "---:|---:|"]
        lines += [f"| {r['model']} | {r['runtime']} | {_fmt(r['s_per_pair'])} | {_fmt(r.get('vs_reference'))} | "
                  + " | ".join(_fmt(r["phases"].get(k, 0.0)) for k in names)
                  + f" | {_fmt(r['max_dev'], 2)} | {r['peak_rss_mb']} |" for r in cli]
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--cli-child"]:
        return cli_child(argv[1], argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed repeats per row (median)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--compile", action="store_true",
                        help="also torch.compile, at the first size and batch (minutes of compiling)")
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--no-cli", action="store_true", help="skip the end-to-end part")
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                        help="the bfloat16 rows: auto (default) only where the CPU runs bfloat16 natively (AMX or "
                        "AVX512-BF16; emulated, one forward was 95x slower than float32 on an AVX2 CPU)")
    parser.add_argument("--stem", default="speed_reference", help="output file names: STEM.md, STEM.csv")
    parser.add_argument("--quick", action="store_true", help="a smoke run: a 9 x 64 x 64 stack, 64 px, 1 repeat "
                        "(2 for the predictor); writes speed_reference_quick.*")
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    from zaugnet.atomic import atomic_write_text
    from zaugnet.tables import write_csv

    torch.set_num_threads(args.threads)
    from zaugnet.training.trainer import bf16_autocast_supported

    native_bf16 = bf16_autocast_supported(torch.device("cpu"))
    args.with_bf16 = args.bf16 == "on" or (args.bf16 == "auto" and native_bf16)
    side = 64 if args.quick else 1024
    sizes = [64] if args.quick else args.sizes
    repeats = 1 if args.quick else args.repeats
    started, load0 = time.perf_counter(), load_average()
    command = "python benchmarks/speed_reference.py " + shlex.join(argv)
    with tempfile.TemporaryDirectory(prefix="zaugnet_speed_") as tmp:
        workdir = Path(tmp)
        stack_path = workdir / "stack.tif"
        stack = make_stack(stack_path, (9, side, side))
        print(f"convolution peak (load {load_average()})", file=sys.stderr, flush=True)
        peak = conv_peak(args.threads, repeats, args.with_bf16)
        print("network forward", file=sys.stderr, flush=True)
        rows = network_part(stack, sizes, args.batches, repeats, peak, args, workdir)
        print("predictor", file=sys.stderr, flush=True)
        rows += predictor_part(stack, max(2, repeats - 1))
        if not args.no_cli:
            print("end to end", file=sys.stderr, flush=True)
            rows += cli_part(stack_path, workdir, args.threads)
        ref = next((r["pairs_per_s"] for r in rows if r["part"] == "network" and r["size"] == side
                    and r["batch"] == 1 and r["runtime"] == "float32 eager"), None)
        for row in rows:  # the paper student's rows of parts 3 and 4 against the reference manner's forward
            if row["part"] in ("predictor", "cli") and row["model"].startswith("paper") and ref:
                row["vs_reference"] = row["pairs_per_s"] / ref
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    header = ["# Speed against the reference implementation (issue 19)", "",
              f"Hardware: {cpu}, {os.cpu_count()} cores, {args.threads} torch thread{'s' * (args.threads != 1)}; "
              f"torch {torch.__version__}; "
              f"load average (1 min) {load0} at the start, {load_average()} at the end; "
              f"{time.perf_counter() - started:.0f} s in all.", "",
              f"Convolution peak (best 3x3 conv of {', '.join(f'{c} ch at {s}^2' for c, s in PEAK_SHAPES)}): "
              f"float32 {peak['float32']:.0f} GFLOP/s, bfloat16 "
              + (f"{peak['bfloat16']:.0f} GFLOP/s." if args.with_bf16 else "not measured."), "",
              f"bfloat16 on this CPU: {'native' if native_bf16 else 'emulated'} (torch's CPU capability "
              f"{torch.backends.cpu.get_cpu_capability()}); the bfloat16 rows were "
              f"{'run' if args.with_bf16 else 'skipped (--bf16 ' + args.bf16 + ')'}.", "",
              "The reference (the authors' generator) is not run: it has this student's architecture and FLOPs and "
              "ran at its speed (issue 19). Its figures here are this student run the reference's way: float32 "
              "eager, batch 1, the whole slice, no tiling (`REFERENCE MANNER` rows).", "",
              f"Command: `{command}`"]
    report = markdown(rows, header)
    print(report)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.stem}_quick" if args.quick else args.stem
    atomic_write_text(out / f"{stem}.md", report + "\n")
    for row in rows:
        if isinstance(row.get("phases"), dict):
            row["phases"] = json.dumps(row["phases"])
    write_csv(rows, out / f"{stem}.csv", FIELDS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
