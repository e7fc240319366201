"""Accuracy and speed of ZAugNet models against the best classical interpolation on real stacks they never saw.

Usage::

    python benchmarks/models.py --model zaugnet=PACKAGE_OR_CHECKPOINT --model zaugnet+=PACKAGE_OR_CHECKPOINT
                                [--stacks FILE ...] [--factors 2 4 | --factor 4] [--sizes 256 1024]
                                [--device cpu] [--pairs N] [--threads N] [--skip-speed] [--skip-accuracy]
                                [-o benchmarks/results]

``--model NAME=SPEC`` (repeatable): NAME is a free row label, SPEC anything ``zaugnet predict --model``
accepts (checkpoint ``.pt``, package folder, ``rdf.yaml`` or ``.zip``, URL, zoo id). Folds: ``--model
NAME=SPEC@STACK,STACK`` scores that model on those stacks only (file names), and the same NAME given again
with the other stacks makes one row label whose every stack is scored by a model that never trained on it
(each stack exactly once; the speed part times the first). Linear, Keys cubic and
the not-a-knot cubic spline along z are always included, and every gain is over the BEST of the three for
that stack, factor and position (none of them wins everywhere).

Accuracy, the paper's protocol (:mod:`zaugnet.evaluate.protocol`): every f-th slice of each held-out stack
is kept, the others predicted back and scored (RMSE, PSNR, SSIM per slice, averaged) on the 8-bit scale and
in native units, with the texture ratio (high-frequency energy of the new slices over the true ones': near
1, no "scan lines"), for each factor. Default stacks: every real stack in ``<repo>/../shared/data`` that
the shipped models were not trained on (:data:`TRAINED_ON`). Writes ``accuracy.csv`` (every row, positions
0.25/0.5/0.75 of factor 4 included, and the "overall" means), ``accuracy.md`` (a table per factor with the
gain over the best classical method, and with ``--auto`` the self-check's choices, whether each was right
and what the wrong ones cost) and ``accuracy.png``.

Speed: pairs per second of ``ModelInterpolator.predict`` (joint normalisation, tiling with tile 512 and
halo 128, mapping back to units: what users run) on random gaps (2 slices, or K for ZAugNet-C) of each
size, for every runtime a model
has: a package is timed with its ``pytorch_state_dict`` (eager), ``torchscript`` and ``onnx`` weights, a
checkpoint eager only. Each (model, runtime, size) runs in a fresh process, so peak memory is its own:
after imports, model loading and input generation the kernel's peak-RSS counter is reset
(``/proc/self/clear_refs``), the pairs are predicted, and the process's ``VmHWM`` then gives the peak resident
set size during prediction; the increase is that peak minus the RSS just before (what prediction adds to a
loaded model). ``VmHWM`` is the kernel's per-process counter behind ``ru_maxrss``; ``getrusage`` itself is not
used on Linux because a child started by ``subprocess`` inherits the parent's peak across ``exec`` (every
worker would report this script's peak). Where the counter cannot be reset, the peak is the whole process's
and the increase is over its peak before prediction (``peak_reset`` False in the CSV); without ``/proc``
(macOS) ``ru_maxrss`` is used. On CUDA also ``torch.cuda.max_memory_allocated`` during prediction. Writes
``speed.csv``, ``speed.md`` (with the hardware line) and ``speed.png``.

All files are written atomically into ``-o`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zaugnet.atomic import atomic_path, atomic_write_text
from zaugnet.errors import InputError
from zaugnet.evaluate.protocol import FIELDS, evaluate_stack, summarize
from zaugnet.predict.baselines import BASELINES as CLASSICAL
from zaugnet.predict.volume import Method
from zaugnet.tables import write_csv

REPO = Path(__file__).resolve().parents[1]
#: The shared data folder beside the checkout.
SHARED_DATA = REPO.parent / "shared" / "data"
#: The real stacks the shipped models were trained on (bioimageio_models/build.sh); the others are the benchmark.
TRAINED_ON = ("neubias_dna_conf_wf.tif", "neubias_chromosomes.tif", "deconwolf_dapi_001.tif")
#: Rows always present: label -> method of :func:`zaugnet.predict.volume.interpolate_volume`.
BASELINES: dict[str, Method] = {m: m for m in CLASSICAL}
#: The label of the reference gains are measured against: per row group, the best classical method.
REFERENCE = "best classical"
#: Package weight format -> runtime label, in table order.
RUNTIMES = {"pytorch_state_dict": "eager", "torchscript": "torchscript", "onnx": "onnx"}
#: Pairs timed per slice size when --pairs is not given (other sizes: scaled by area, at least 2).
DEFAULT_PAIRS = {256: 8, 1024: 2}
SPEED_FIELDS = ("model", "runtime", "device", "size", "pairs", "threads", "seconds", "pairs_per_s", "s_per_pair",
                "peak_rss_mb", "rss_increase_mb", "cuda_peak_mb", "peak_reset", "note")
_ACCURACY_COLUMNS = (("psnr_8bit", "PSNR 8-bit (dB)", ".2f"), ("ssim_8bit", "SSIM 8-bit", ".4f"),
                     ("texture", "texture ratio", ".2f"),
                     ("rmse_8bit", "RMSE 8-bit", ".3f"), ("psnr", "PSNR native (dB)", ".2f"),
                     ("ssim", "SSIM native", ".4f"), ("rmse", "RMSE native", ".4g"))


# ------------------------------------------------------------------------------------ inputs
def parse_model(text: str) -> tuple[str, str]:
    """``NAME=SPEC`` -> ``(NAME, SPEC)``; without ``=``, NAME is the file name without suffix."""
    name, sep, spec = text.partition("=")
    if not sep:
        name, spec = Path(text.rstrip("/")).stem, text
    if not name or not spec:
        raise InputError("--model", f"expected NAME=SPEC (e.g. zaugnet=runs/a/final.pt), got {text!r}")
    if name in BASELINES:
        raise InputError("--model", f"{name!r} is a baseline's label; name the model otherwise")
    return name, spec


def split_fold(spec: str) -> tuple[str, tuple[str, ...]]:
    """``SPEC@STACK,STACK`` -> ``(SPEC, (STACK, STACK))``: the stacks (file names) that model is scored on; without
    ``@`` (or when what follows the last ``@`` is not a list of TIFF names, e.g. in a URL), every stack: ``()``."""
    head, sep, tail = spec.rpartition("@")
    names = tuple(n.strip() for n in tail.split(","))
    if sep and head and all(n.lower().endswith((".tif", ".tiff")) for n in names):
        return head, names
    return spec, ()


def check_folds(models: Sequence[tuple[str, str]], stacks: Sequence[Path] | None) -> None:
    """Each label is one model for every stack, or folds that score each of ``stacks`` exactly once (``None``: the
    stacks are not known, only repeated labels are checked).

    Raises
    ------
    InputError
        If a label repeats without folds, or its folds miss a stack, name one twice or name one not benchmarked.
    """
    for label in dict.fromkeys(name for name, _ in models):
        folds = [split_fold(spec)[1] for name, spec in models if name == label]
        if len(folds) == 1 and not folds[0]:
            continue
        if not all(folds):
            raise InputError("--model", f"{label!r} is given twice; folds name their stacks (NAME=SPEC@STACK,...)")
        if stacks is None:
            continue
        names = [p.name for p in stacks]
        scored = [n for fold in folds for n in fold]
        for problem, which in (("names a stack not benchmarked", sorted(set(scored) - set(names))),
                               ("scores a stack twice", sorted({n for n in scored if scored.count(n) > 1})),
                               ("leaves a stack unscored", [n for n in names if n not in scored])):
            if which:
                raise InputError("--model", f"{label!r} {problem}: {', '.join(which)}")


def default_stacks(folder: Path = SHARED_DATA) -> list[Path]:
    """The real stacks in ``folder`` the shipped models never saw (all but :data:`TRAINED_ON`).

    Raises
    ------
    InputError
        If there are none (naming the folder and the ``--stacks`` option).
    """
    paths = sorted(p for p in folder.glob("*.tif") if p.name not in TRAINED_ON)
    if not paths:
        raise InputError(folder, "no real stacks found (the shared/ folder beside the checkout); pass --stacks FILE "
                                 "... to benchmark on other stacks")
    return paths


def load_methods(models: Sequence[tuple[str, str]], device: str,
                 auto: bool = False) -> Callable[[str], dict[str, Method]]:
    """Stack file name -> (label -> method): the baselines, then each label's model for that stack (its fold's,
    see :func:`split_fold`), loaded once with ``load_interpolator`` (and, with ``auto``, that model under
    ``--method auto`` as ``auto(NAME)``: its self-check runs on the reduced stack, which is all a user would
    have)."""
    from zaugnet.export.load import load_interpolator

    from zaugnet.evaluate.selfcheck import AutoMethod

    loaded: list[tuple[str, tuple[str, ...], Method, Method | None]] = []
    for name, spec in models:
        source, stacks = split_fold(spec)
        model = load_interpolator(source, device=device, name=name)
        loaded.append((name, stacks, model, AutoMethod(model, report=lambda text: None) if auto else None))

    def methods_for(stack: str) -> dict[str, Method]:
        methods: dict[str, Method] = dict(BASELINES)
        chosen = [(name, model, checked) for name, stacks, model, checked in loaded if not stacks or stack in stacks]
        methods.update({name: model for name, model, _ in chosen})
        methods.update({checked.name: checked for _, _, checked in chosen if checked is not None})
        return methods

    return methods_for


# ------------------------------------------------------------------------------------ accuracy
def accuracy_rows(stacks: Sequence[Path], methods: Callable[[str], Mapping[str, Method]],
                  factors: Sequence[int]) -> tuple[list[dict], list[str], list[dict]]:
    """Rows of :data:`zaugnet.evaluate.protocol.FIELDS` for every stack, method and factor.

    Parameters
    ----------
    stacks
        Ground-truth stacks (every time point and channel is a volume of its own).
    methods
        Stack file name -> (row label -> method), e.g. :func:`load_methods`.
    factors
        Integers >= 2; :func:`~zaugnet.evaluate.protocol.evaluate_volume` scores factor 2 with every
        run, so factor 2 is computed once.

    Returns
    -------
    rows, descriptions, checks
        The per-volume rows, one line per stack (name, shape, dtype, voxel size), and for each
        ``auto(...)`` method, volume and factor its self-check's choice judged against the truth
        (:func:`zaugnet.evaluate.selfcheck.judge_self_checks`).
    """
    from tqdm.auto import tqdm

    from zaugnet.evaluate.selfcheck import AutoMethod, judge_self_checks
    from zaugnet.io.tiff import read_stack

    checks: list[dict] = []

    wanted = sorted({int(f) for f in factors})
    runs = [f for f in wanted if f > 2] or [2]
    rows: list[dict] = []
    descriptions: list[str] = []
    with tqdm(total=len(stacks) * len(runs), desc="accuracy", unit="run") as bar:
        for path in stacks:
            stack = read_stack(path)
            descriptions.append(_describe(stack))
            here = methods(path.name)
            autos = [m for m in here.values() if isinstance(m, AutoMethod)]
            for f in runs:
                bar.set_postfix_str(f"{path.name} x{f}")
                for _, evaluation in evaluate_stack(stack, here, f):
                    rows.extend(r for r in evaluation.rows if r["factor"] in wanted
                                and (r["factor"] == f or (r["factor"] == 2 and f == runs[0])))
                    checks += [c for auto in autos for c in judge_self_checks(evaluation.rows, auto)
                               if c["factor"] in wanted and (c["factor"] == f or (c["factor"] == 2 and f == runs[0]))]
                bar.update()
    return rows, descriptions, checks


def self_check_markdown(checks: Sequence[dict]) -> str:
    """The self-check section of ``accuracy.md``: how often ``--method auto`` chose right, what wrong choices cost."""
    if not checks:
        return ""
    right = sum(bool(c["right"]) for c in checks)
    costs = [float(c["cost_db"]) for c in checks]
    lines = ["## Self-check (`--method auto`)", "",
             (f"On each reduced stack (all a user has) the self-check holds slices out at twice and four times the "
              f"spacing, predicts them with the model and with linear, cubic and spline interpolation, and chooses the "
              f"model's weight in a mix with the best classical method (`zaugnet.evaluate.selfcheck.mix_weight`). "
              f"Its output was within 0.1 dB of the truly best of the four, or above it (on the benchmark's ground "
              f"truth) in **{right} of {len(checks)}** cases; wrong choices cost "
              f"{max(costs):.2f} dB at most, {float(np.mean(costs)):.2f} dB on average over all cases."), "",
             "| stack | factor | model | choice | model weight | truly best | cost (dB) | model margin on the check "
             "(dB) | true model margin (dB) | right |",
             "|---|---:|---|---|---:|---|---:|---:|---:|---|"]
    for c in checks:
        lines.append(f"| {c['stack']} | {c['factor']} | {c['model']} | {c['choice']} | "
                     f"{_number(c['weight'], '.2f')} | {c['best']} | "
                     f"{_number(c['cost_db'], '.2f')} | {_number(c['check_margin_db'], '+.2f')} | "
                     f"{_number(c['true_margin_db'], '+.2f')} | {'yes' if c['right'] else 'no'} |")
    lines += ["", "Margins: the model minus the best classical method (at twice the spacing on the check)."]
    return "\n".join([*lines, ""])


def gains(rows: Sequence[dict]) -> list[dict]:
    """Each row with ``psnr_gain`` and ``ssim_gain``: 8-bit PSNR and SSIM minus those of the best classical
    method (by PSNR) of the same stack, factor and position (NaN where there is none), and ``best_classical``.
    For the "overall" rows, the gains are the means of the per-stack gains (the best classical method differs
    from stack to stack)."""
    best: dict[tuple, dict] = {}
    for r in rows:
        key = (r["stack"], r["factor"], r["position"])
        if r["method"] in BASELINES and r["stack"] != "overall" and (
                key not in best or r["psnr_8bit"] > best[key]["psnr_8bit"]):
            best[key] = r
    out = []
    for row in rows:
        base = best.get((row["stack"], row["factor"], row["position"]))
        out.append({**row, "best_classical": base["method"] if base else "",
                    "psnr_gain": row["psnr_8bit"] - base["psnr_8bit"] if base else math.nan,
                    "ssim_gain": row["ssim_8bit"] - base["ssim_8bit"] if base else math.nan})
    for row in out:
        if row["stack"] == "overall":
            members = [r for r in out if r["stack"] != "overall" and (r["method"], r["factor"], r["position"])
                       == (row["method"], row["factor"], row["position"])]
            for key in ("psnr_gain", "ssim_gain"):
                row[key] = float(np.mean([m[key] for m in members])) if members else math.nan
    return out


def accuracy_markdown(rows: Sequence[dict], descriptions: Sequence[str], models: Sequence[tuple[str, str]],
                      command: str) -> str:
    """``accuracy.md``: a table per factor (position "all"), a row per stack x method and the overall mean."""
    kept = [r for r in rows if r["position"] == "all"]
    table_rows = gains([*kept, *summarize(kept)])
    lines = ["# Accuracy: z-slice interpolation against the best classical method", "",
             ("Protocol (the paper's): every f-th slice of each stack is kept, the slices between are predicted back "
              "and only those are scored (RMSE, PSNR, SSIM per slice, averaged); 8-bit scale: ground truth and "
              "prediction mapped by the ground truth's min/max to 0-255; native: the stack's units, data range its "
              "max - min. Gains are over the best classical method (linear, cubic or spline, whichever scores "
              "the highest 8-bit PSNR on that stack and factor), on the 8-bit scale (\"overall\": the mean of the "
              "stacks' gains); texture ratio: high-frequency "
              "energy of the predicted slices over the true ones (1: as textured as acquired slices; linear "
              "interpolation of noise gives 0.5); \"overall\" is the mean over stacks."), "",
             "Stacks:", "", *(f"- {d}" for d in descriptions), "",
             "Methods: linear, cubic (Keys cubic convolution along z) and spline (not-a-knot cubic spline along z)"
             + "".join(f"; {name} = {_described(spec)}" for name, spec in models) + ".", "",
             f"Command: `{command}`", ""]
    for factor in sorted({r["factor"] for r in table_rows}):
        header = ["stack", "method", *(title for _, title, _ in _ACCURACY_COLUMNS),
                  f"PSNR gain over {REFERENCE} (dB)", f"SSIM gain over {REFERENCE}"]
        lines += [f"## {factor}x (every {_ordinal(factor)} slice kept)", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(header) - 2)]
        notes = []
        for row in (r for r in table_rows if r["factor"] == factor):
            cells = [row["stack"] if row["stack"] != "overall" else "**overall**", row["method"],
                     *(_number(row[key], fmt) for key, _, fmt in _ACCURACY_COLUMNS),
                     _number(row["psnr_gain"], "+.2f"), _number(row["ssim_gain"], "+.4f")]
            lines.append("| " + " | ".join(cells) + " |")
            if row.get("note") and row["stack"] != "overall":
                notes.append(f"{row['method']} on {row['stack']}: {row['note']}")
        lines += ["", *(f"- {n}" for n in notes), *([""] if notes else [])]
    return "\n".join(lines)


def accuracy_figure(rows: Sequence[dict], path: Path) -> Path:
    """``accuracy.png``: 8-bit PSNR gain over the reference per stack (and overall) and method, one panel per factor."""
    plt = _pyplot()
    kept = [r for r in rows if r["position"] == "all"]
    table = gains([*kept, *summarize(kept)])
    factors = sorted({r["factor"] for r in table})
    stacks = list(dict.fromkeys(r["stack"] for r in table))
    methods = list(dict.fromkeys(r["method"] for r in table))
    fig, axes = plt.subplots(1, len(factors), figsize=(1.6 + 1.4 * len(stacks) * len(factors), 4.2), squeeze=False,
                             sharey=True)
    width = 0.8 / max(1, len(methods))
    for ax, factor in zip(axes[0], factors):
        values = {(r["stack"], r["method"]): r["psnr_gain"] for r in table if r["factor"] == factor}
        for i, method in enumerate(methods):
            heights = [values.get((s, method), math.nan) for s in stacks]
            ax.bar(np.arange(len(stacks)) + (i - (len(methods) - 1) / 2) * width, np.nan_to_num(heights),
                   width, label=method)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(np.arange(len(stacks)), [_short(s) for s in stacks], rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{factor}x")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(f"PSNR (8-bit) gain over {REFERENCE} (dB)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------ speed
def runtimes_of(spec: str, scratch: Path) -> tuple[str, list[tuple[str, str | None]]]:
    """Where a model can be loaded from for timing, and its runtimes ``(label, weight_format)``.

    A package (folder, ``rdf.yaml`` or ``.zip``; a zip is unpacked once into ``scratch``) gives each of
    its weight formats in :data:`RUNTIMES` order; a checkpoint gives eager only; anything else (URL, zoo id)
    its default runtime.
    """
    import yaml
    from zaugnet.export.load import CHECKPOINT_SUFFIXES, RDF_NAMES
    from zaugnet.export.safezip import extract_zip

    path = Path(spec).expanduser()
    folder: Path | None = None
    if path.is_dir():
        folder = path
    elif path.is_file() and path.name in RDF_NAMES:
        folder = path.parent
    elif path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return spec, [("eager", None)]
    elif path.is_file() and zipfile.is_zipfile(path):
        folder = extract_zip(path, Path(tempfile.mkdtemp(dir=scratch)) / "package")
    if folder is None:
        return spec, [("default", None)]
    rdf_file = next((folder / n for n in RDF_NAMES if (folder / n).is_file()), None)
    if rdf_file is None:
        raise InputError(spec, "not a BioImage.IO package (no rdf.yaml)")
    weights = (yaml.safe_load(rdf_file.read_text(encoding="utf-8")) or {}).get("weights") or {}
    return str(folder), [(label, fmt) for fmt, label in RUNTIMES.items() if fmt in weights]


def pairs_for(size: int, pairs: int | None) -> int:
    """Pairs timed at ``size``: ``pairs``, else :data:`DEFAULT_PAIRS` (other sizes scaled by area, >= 2)."""
    if pairs is not None:
        return pairs
    return DEFAULT_PAIRS.get(size, max(2, round(8 * (256 / size) ** 2)))


def speed_worker(job: Mapping[str, Any]) -> dict[str, Any]:
    """(In a fresh process) load one model runtime, time ``job["pairs"]`` pairs, measure peak memory.

    Parameters
    ----------
    job
        ``spec``, ``weight_format`` (or None), ``device``, ``size``, ``pairs``, ``threads`` (or None: torch's
        default; onnxruntime gets the same number of intra-op threads).

    Returns
    -------
    dict
        ``seconds`` (the timed pairs, after a warm-up on the same inputs), ``threads``, ``peak_rss_mb`` (peak
        RSS during prediction, warm-up included), ``rss_increase_mb`` (that minus the RSS before prediction),
        ``cuda_peak_mb`` (``torch.cuda.max_memory_allocated`` during prediction; NaN on the CPU) and
        ``peak_reset`` (False: the peak-RSS counter could not be reset, so the peak is the whole process's and
        the increase is over its peak before prediction).
    """
    import torch
    from zaugnet.export.load import load_interpolator

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    threads = torch.get_num_threads()
    device, size, n = str(job["device"]), int(job["size"]), int(job["pairs"])
    options = {"weight_format": job["weight_format"]} if job.get("weight_format") else {}
    model = load_interpolator(job["spec"], device=device, **options)
    rng = np.random.default_rng(0)
    windows = rng.integers(0, 4000, (n, model.n_slices, size, size)).astype(np.float32)  # the slices of n gaps
    z = np.full(n, 0.5)
    if job.get("weight_format") == "onnx":
        _onnx_threads(model, threads)
    cuda = device.startswith("cuda")
    gc.collect()
    reset = _reset_peak_rss()
    baseline = _current_rss_mb() if reset else _peak_rss_mb()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    tiles = math.ceil(size / model.tile) ** 2
    warm = max(1, min(n, model.batch_size // tiles))
    for _ in range(2 if job.get("weight_format") == "torchscript" else 1):  # the profiling executor optimises on run 2
        model.predict_windows(windows[:warm], z[:warm])
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(0, n, model.batch_size):
        model.predict_windows(windows[i:i + model.batch_size], z[i:i + model.batch_size])
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = _peak_rss_mb()
    return {"seconds": seconds, "threads": threads, "peak_rss_mb": peak, "rss_increase_mb": peak - baseline,
            "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else math.nan,
            "peak_reset": reset}


def measure(job: Mapping[str, Any]) -> dict[str, Any]:
    """Run :func:`speed_worker` in a fresh Python process; return its result (or ``{"note": why it failed}``)."""
    result = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_speed-worker", json.dumps(job)],
                            capture_output=True, text=True, check=False)
    found = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode or not found:
        tail = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        return {"note": f"failed: {tail[-200:]}"}
    return json.loads(found[-1][len("RESULT "):])


def speed_rows(models: Sequence[tuple[str, str]], sizes: Sequence[int], device: str, pairs: int | None,
               threads: int | None) -> list[dict]:
    """One row of :data:`SPEED_FIELDS` per model, runtime and size, each measured in its own process."""
    from tqdm.auto import tqdm

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="zaugnet-bench-") as scratch:
        jobs = []
        for name, spec in models:
            source, runtimes = runtimes_of(spec, Path(scratch))
            for label, fmt in runtimes:
                for size in sizes:
                    jobs.append((name, label, {"spec": source, "weight_format": fmt, "device": device, "size": size,
                                               "pairs": pairs_for(size, pairs), "threads": threads}))
        for name, label, job in tqdm(jobs, desc="speed", unit="run"):
            row = {"model": name, "runtime": label, "device": device, "size": job["size"], "pairs": job["pairs"],
                   **dict.fromkeys(SPEED_FIELDS[5:12], math.nan), "peak_reset": "", "note": ""}
            if label == "onnx" and device != "cpu":
                row["note"] = "skipped: ONNX weights run on the CPU here"
            else:
                result = measure(job)
                row.update(result)
                if "seconds" in result:
                    row["pairs_per_s"] = job["pairs"] / result["seconds"]
                    row["s_per_pair"] = result["seconds"] / job["pairs"]
            rows.append(row)
    return rows


def hardware_line(device: str, rows: Sequence[dict]) -> str:
    """CPU model, cores, threads, torch and onnxruntime versions, device (and GPU), load average."""
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = "not installed"
    threads = sorted({int(r["threads"]) for r in rows if not _missing(r["threads"])})
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.startswith("cuda") and torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} cores, {'/'.join(map(str, threads)) or '?'} torch and onnxruntime threads; "
            f"torch {torch.__version__}, onnxruntime {ort}; device {device}{gpu}; "
            f"load average at the start {os.getloadavg()[0]:.1f}")


def speed_markdown(rows: Sequence[dict], hardware: str, models: Sequence[tuple[str, str]], command: str) -> str:
    """``speed.md``: the hardware line and a row per model, runtime and size."""
    cuda = any(not _missing(r["cuda_peak_mb"]) for r in rows)
    header = ["model", "runtime", "size", "pairs", "pairs/s", "s/pair", "peak RSS (MB)", "RSS increase (MB)",
              *(["CUDA peak (MB)"] if cuda else []), "note"]
    lines = ["# Prediction speed and peak memory", "", f"Hardware: {hardware}.", "",
             "Timed: `ModelInterpolator.predict_windows` on random gaps (a pair, or K slices for ZAugNet-C; pairs/s = "
             "new slices per second) of each size (joint normalisation, tiles of 512 with "
             "a halo of 128, mapping back to units), batches of 4 tiles, after a warm-up on the same inputs. "
             "Each row runs in a fresh process. Peak RSS: the process's `VmHWM` (the counter behind `ru_maxrss`) "
             "during prediction (warm-up included), the counter being reset after imports, model loading and input "
             "generation; RSS increase: "
             "that peak minus the RSS before prediction (what prediction adds to the loaded model)"
             + ("; CUDA peak: `torch.cuda.max_memory_allocated` during prediction" if cuda else "") + "."
             + (" Rows marked * could not reset the counter: their peak is the whole process's and the increase is "
                "over its peak before prediction." if not all(r.get("peak_reset", True) in (True, "") for r in rows)
                else ""), "",
             "Models: " + "; ".join(f"{name} = `{spec}`" for name, spec in models) + ".", "",
             f"Command: `{command}`", "",
             "| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 3) + "---|"]
    for r in rows:
        peak = _number(r["peak_rss_mb"], ".0f") + ("*" if r.get("peak_reset") is False else "")
        cells = [r["model"], r["runtime"], f"{r['size']} x {r['size']}", str(r["pairs"]),
                 _number(r["pairs_per_s"], ".3g"), _number(r["s_per_pair"], ".3g"), peak,
                 _number(r["rss_increase_mb"], ".0f"),
                 *([_number(r["cuda_peak_mb"], ".0f")] if cuda else []), r.get("note", "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, ""])


def speed_figure(rows: Sequence[dict], path: Path) -> Path:
    """``speed.png``: pairs/s and peak RSS increase per model and runtime, grouped by size (log scale for pairs/s)."""
    plt = _pyplot()
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    series = list(dict.fromkeys(f"{r['model']} {r['runtime']}" for r in rows))
    values = {(f"{r['model']} {r['runtime']}", r["size"]): r for r in rows}
    fig, axes = plt.subplots(1, 2, figsize=(max(9.0, 3 + 0.8 * len(sizes) * len(series)), 4.2))
    width = 0.8 / max(1, len(series))
    for ax, key, title in ((axes[0], "pairs_per_s", "pairs per second"),
                           (axes[1], "rss_increase_mb", "peak RSS increase (MB)")):
        for i, name in enumerate(series):
            heights = [float(values[(name, s)][key]) if (name, s) in values else math.nan for s in sizes]
            ax.bar(np.arange(len(sizes)) + (i - (len(series) - 1) / 2) * width, np.nan_to_num(heights), width,
                   label=name)
        ax.set_xticks(np.arange(len(sizes)), [f"{s} x {s}" for s in sizes])
        ax.set_ylabel(title)
        if key == "pairs_per_s" and len(sizes) > 1:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="benchmarks/models.py", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", action="append", default=[], metavar="NAME=SPEC",
                        help="a model to benchmark: row label = checkpoint, package folder/zip/rdf.yaml, URL or zoo id")
    parser.add_argument("--stacks", nargs="+", metavar="FILE",
                        help=f"ground-truth stacks (default: those in {SHARED_DATA} except {', '.join(TRAINED_ON)})")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--factors", type=int, nargs="+", default=[2, 4], help="z factors (default: 2 4)")
    group.add_argument("--factor", type=int, help="shorthand for --factors 2 FACTOR")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024],
                        help="slice sides timed (default: 256 1024)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:N)")
    parser.add_argument("--pairs", type=int, help=f"pairs timed per size (default: {DEFAULT_PAIRS})")
    parser.add_argument("--threads", type=int, help="torch (and onnxruntime) threads (default: torch's)")
    parser.add_argument("--auto", action="store_true", help="also score each model under --method auto (its "
                        "self-check among it, linear, cubic and spline) and report how often it chose right")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("-o", "--output", default=str(REPO / "benchmarks" / "results"), help="output folder")
    parser.add_argument("--_speed-worker", dest="speed_worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.factor is not None:
        args.factors = [2, args.factor]
    if any(f < 2 for f in args.factors):
        parser.error("--factors: integers >= 2")
    if any(s < 1 for s in args.sizes) or (args.pairs is not None and args.pairs < 1):
        parser.error("--sizes and --pairs must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the exit status (2 with one error line for bad input)."""
    args = parse_args(argv)
    if args.speed_worker:
        print("RESULT " + json.dumps(speed_worker(json.loads(args.speed_worker))), flush=True)
        return 0
    command = shlex.join(["python", "benchmarks/models.py", *(sys.argv[1:] if argv is None else argv)])
    out = Path(args.output)
    try:
        models = [parse_model(m) for m in args.model]
        check_folds(models, None)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        if not args.skip_accuracy:
            stacks = [Path(s) for s in args.stacks] if args.stacks else default_stacks()
            for path in stacks:
                if not path.is_file():
                    raise InputError(path, "stack not found")
            check_folds(models, stacks)
            rows, descriptions, checks = accuracy_rows(stacks, load_methods(models, args.device, args.auto),
                                                       args.factors)
            write_csv([*rows, *summarize(rows)], out / "accuracy.csv", FIELDS)
            text = accuracy_markdown(rows, descriptions, models, command) + self_check_markdown(checks)
            atomic_write_text(out / "accuracy.md", text)
            accuracy_figure(rows, out / "accuracy.png")
            print(text)
        if not args.skip_speed:
            timed: dict[str, str] = {}  # label -> its first model (of its folds)
            for name, spec in models:
                timed.setdefault(name, split_fold(spec)[0])
            if not models:
                print("speed: no --model given, nothing to time", file=sys.stderr)
            else:
                rows = speed_rows(list(timed.items()), args.sizes, args.device, args.pairs, args.threads)
                write_csv(rows, out / "speed.csv", SPEED_FIELDS)
                text = speed_markdown(rows, hardware_line(args.device, rows), list(timed.items()), command)
                atomic_write_text(out / "speed.md", text)
                speed_figure(rows, out / "speed.png")
                print(text)
    except InputError as err:
        print(f"benchmarks/models.py: error: {err}", file=sys.stderr)
        return 2
    print(f"results in {out}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------ helpers
def _describe(stack: Any) -> str:
    name = stack.path.name if stack.path is not None else "stack"
    shape = " x ".join(map(str, stack.data.shape))
    vs = stack.voxel_size
    voxel = (f", voxel {vs.z:g} x {vs.y:g} x {vs.x:g} {vs.unit} (z, y, x)"
             if None not in (vs.z, vs.y, vs.x) else "")
    return f"`{name}`: {shape} ({stack.axes}) {stack.data.dtype}{voxel}"


def _described(spec: str) -> str:
    """A ``--model`` SPEC in words: ``path``, or ``path`` on the stacks of its fold."""
    source, stacks = split_fold(spec)
    return f"`{source}`" + (f" (on {', '.join(stacks)})" if stacks else "")


def _ordinal(n: int) -> str:
    return {2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def _missing(value: object) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _number(value: object, fmt: str) -> str:
    if _missing(value):
        return "n/a"
    number = float(value)  # type: ignore[arg-type]
    return ("inf" if number > 0 else "-inf") if math.isinf(number) else format(number, fmt)


def _short(stack: str) -> str:
    return stack.replace(".ome.tif", "").replace(".tiff", "").replace(".tif", "")


def _status_mb(key: str) -> float | None:
    """A ``kB`` field of ``/proc/self/status`` in MB (None without ``/proc``)."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    line = next((line for line in status.read_text().splitlines() if line.startswith(key + ":")), None)
    return int(line.split()[1]) / 2**10 if line else None


def _peak_rss_mb() -> float:
    """Peak RSS of this process in MB: ``VmHWM``, else ``ru_maxrss`` (KiB on Linux, bytes on macOS).

    ``ru_maxrss`` is not read first because, after ``exec``, it still holds the parent's peak.
    """
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 2**10


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (``VmHWM``) to the current RSS; False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _current_rss_mb() -> float:
    """Current RSS of this process in MB (``VmRSS``; only called where ``/proc`` exists)."""
    return _status_mb("VmRSS") or math.nan


def _onnx_threads(model: Any, threads: int) -> None:
    """Give the model's onnxruntime session ``threads`` intra-op threads (as torch has), same file."""
    import onnxruntime as ort

    network = model.network
    source = getattr(getattr(network, "session", None), "_model_path", None)
    if not source:
        return
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    network.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main())
