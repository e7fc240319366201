"""Training throughput versus number of processes (DistributedDataParallel through torchrun), AMP on and off.

Usage: python benchmarks/train_scaling.py [--device cpu|cuda] [--nproc 1 2] [--amp on off] [--preset small]
                                          [--variant zaugnet] [--global-batch 16] [--micro-batch 8]
                                          [--steps 8] [--warmup 4] [--stack-size 256] [--set KEY=VALUE ...]
                                          [-o DIR]

For every number of processes N and AMP setting it runs, on synthetic membrane phantoms (2 per process,
no validation),

    python -m torch.distributed.run --standalone --nproc-per-node N -m zaugnet train ...

with the same global batch: each process takes ``global / N`` samples per step, split by
``train.accumulate`` into micro-batches of ``--micro-batch`` samples, so the update is the same for every N
(the paper's batch of 128 on fewer GPUs: ``--global-batch 128 --micro-batch 16``). Time per step is taken
from the run's ``metrics.csv`` (rank 0's clock) between step ``--warmup`` and the last step, so start-up
and the first, slower steps are left out. Rank 0 writes ``metrics.csv`` and the training curves at every
multiple of ``--warmup``, so keep ``--steps <= 2 x --warmup`` to keep those writes out of the timed
window (the defaults do); with a critic (``paper`` preset) the timed steps must be whole
cycles of ``n_critic`` critic steps and one generator step. On a CPU each process gets ``cores // N`` threads.

Prints a markdown table (s/step, samples/s, speed-up and efficiency over 1 process with the same AMP
setting); with ``-o DIR`` also writes ``train_scaling.md``, ``.csv`` and ``.png`` there. AMP is bfloat16
autocast, used only where the device runs bfloat16 natively; the table says whether it was.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

FIELDS = ["device", "processes", "threads_per_process", "amp", "global_batch", "micro_batch", "accumulate",
          "seconds_per_step", "samples_per_second", "speedup", "efficiency"]


def write_phantoms(folder: Path, n: int, size: int) -> None:
    """``n`` synthetic uint16 membrane stacks of 12 x ``size`` x ``size``."""
    from zaugnet.io.tiff import VoxelSize, write_stack
    from zaugnet.phantoms import simulate_stack

    folder.mkdir(parents=True, exist_ok=True)
    for seed in range(n):
        stack = simulate_stack((12, size, size), kind="membrane", seed=seed, z_step_um=0.6)
        write_stack(folder / f"phantom_{seed}.tif", stack, "ZYX", VoxelSize(0.6, 0.2, 0.2))


def run_once(args: argparse.Namespace, data: Path, run: Path, nproc: int, amp: bool) -> dict:
    """One torchrun training run; its row of the table (without speed-up and efficiency)."""
    per_process = args.global_batch // nproc
    accumulate = per_process // args.micro_batch
    threads = max(1, (os.cpu_count() or 1) // nproc) if args.device == "cpu" else 1
    sets = [f"train.batch_size={per_process}", f"train.accumulate={accumulate}", f"train.amp={str(amp).lower()}",
            "data.val_fraction=0", f"train.val_every={args.warmup}", f"train.checkpoint_every={args.steps + 1}",
            f"net.variant={args.variant}", *args.set]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "zaugnet", "train", str(data), "-o", str(run), "--preset", args.preset, "--device", args.device,
           "--max-steps", str(args.steps), "--quiet", *[a for s in sets for a in ("--set", s)]]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"train_scaling.py: error: {' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    with (run / "metrics.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    first, last = rows[0], rows[-1]
    seconds = (float(last["seconds"]) - float(first["seconds"])) / (float(last["step"]) - float(first["step"]))
    return {"device": args.device, "processes": nproc, "threads_per_process": threads,
            "amp": "bf16" if "(bfloat16 autocast)" in proc.stderr else "off",
            "global_batch": args.global_batch, "micro_batch": args.micro_batch, "accumulate": accumulate,
            "seconds_per_step": round(seconds, 4), "samples_per_second": round(args.global_batch / seconds, 2)}


def add_speedup(rows: list[dict]) -> None:
    """Speed-up and efficiency of each row over the 1-process row with the same AMP setting."""
    for row in rows:
        base = next((r for r in rows if r["processes"] == 1 and r["amp"] == row["amp"]), None)
        speedup = row["samples_per_second"] / base["samples_per_second"] if base else float("nan")
        row["speedup"] = round(speedup, 2)
        row["efficiency"] = round(speedup / row["processes"], 2)


def markdown(rows: list[dict], header: str) -> str:
    """The table as markdown, below ``header``."""
    lines = [header, "", "| " + " | ".join(FIELDS) + " |", "|" + "---|" * len(FIELDS)]
    lines += ["| " + " | ".join(str(r[k]) for k in FIELDS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """Samples per second versus processes, one line per AMP setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2), constrained_layout=True)
    for amp in sorted({r["amp"] for r in rows}):
        mine = [r for r in rows if r["amp"] == amp]
        ax.plot([r["processes"] for r in mine], [r["samples_per_second"] for r in mine], "o-", label=f"AMP {amp}")
    ax.set(xlabel="processes", ylabel="training samples / s", title=f"training throughput ({rows[0]['device']})")
    ax.set_xticks(sorted({r["processes"] for r in rows}))
    ax.legend()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--amp", nargs="+", default=["on", "off"], choices=["on", "off"])
    parser.add_argument("--preset", default="small", choices=["small", "paper"])
    parser.add_argument("--variant", default="zaugnet", choices=["zaugnet", "zaugnet+", "zaugnet-c"])
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--stack-size", type=int, default=256, help="phantom side in pixels (>= the crop)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to zaugnet train")
    parser.add_argument("-o", "--out", type=Path, help="folder for train_scaling.md/.csv/.png")
    args = parser.parse_args(argv)
    for n in args.nproc:
        if args.global_batch % (n * args.micro_batch):
            parser.error(f"--global-batch {args.global_batch} is not a multiple of {n} processes x "
                         f"--micro-batch {args.micro_batch}")
    if not 0 < args.warmup < args.steps:
        parser.error("need 0 < --warmup < --steps")
    from zaugnet.training.config import build_config, parse_override

    train = build_config({"preset": args.preset}, *[parse_override(s) for s in args.set]).train
    if train.adversarial and (args.steps - args.warmup) % train.n_critic:
        parser.error(f"--steps - --warmup must be a multiple of n_critic ({train.n_critic}) so the timed steps "
                     "hold whole critic / generator cycles")

    import torch

    command = "python benchmarks/train_scaling.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = (f"# Training throughput ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"{args.device}, torch {torch.__version__}); {args.preset} preset, {args.variant}\n\n"
              f"Command: `{command}`")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_phantoms(data, 2 * max(args.nproc), args.stack_size)
        for amp in args.amp:
            for n in args.nproc:
                rows.append(run_once(args, data, Path(tmp) / f"run_{n}_{amp}", n, amp == "on"))
                print(f"{n} process(es), AMP {amp}: {rows[-1]['seconds_per_step']} s/step", file=sys.stderr)
    add_speedup(rows)
    table = markdown(rows, header)
    print(table)
    if args.out:
        from zaugnet.atomic import atomic_path, atomic_write_text
        from zaugnet.tables import write_csv

        atomic_write_text(args.out / "train_scaling.md", table)
        write_csv(rows, args.out / "train_scaling.csv", FIELDS)
        with atomic_path(args.out / "train_scaling.png") as tmp_png:
            plot(rows, tmp_png)


if __name__ == "__main__":
    main()
