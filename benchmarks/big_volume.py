"""Out-of-core prediction: peak memory versus volume size, and throughput versus dask workers.

Usage: python benchmarks/big_volume.py [--net tiny|small] [--sizes 2048 4096 6144] [--slices 3]
                                       [--chunk 512] [--workers 1 2] [--no-distributed] [--folder DIR]
                                       [--malloc-arena-max N] [-o DIR]

With an untrained network (speed and memory do not depend on the weights; ``tiny`` is the test suite's
network, ``small`` the small preset) it z-augments synthetic uint16 OME-Zarr volumes by a factor of 2
with :func:`zaugnet.predict.outofcore.predict_large` (ZAugNet+, chunk/block 512, halo 128):

1. memory: one fresh process per volume size (``--slices`` x N x N). Each runs a warm-up prediction on
   a small volume, resets the kernel's peak-RSS counter (``/proc/self/clear_refs``), predicts the big
   volume and reports its peak RSS (``VmHWM``) and the growth over the warm-up. Flat growth while the
   volume grows is the point.
2. throughput: one volume predicted with the threaded scheduler and 1, 2, ... workers, and (unless
   ``--no-distributed``) a ``dask.distributed`` LocalCluster of 2 single-threaded worker processes.

Prints markdown tables; with ``-o DIR`` also writes them to ``DIR/big_volume.md`` and plots both to
``DIR/big_volume.png``. The default run takes about 2 minutes on an idle 2-core CPU (longer under load).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TINY_NET = {"block_widths": [16, 12, 8], "teacher_width": 8, "trunk_depth": 1, "context_width": 2,
            "unet_width": 2, "critic_width": 4}


def make_model(net: str, device: str = "cpu"):
    """An untrained ZAugNet+ student wrapped as a ModelInterpolator."""
    from zaugnet.training.config import build_config
    from zaugnet.training.nets import Student

    from zaugnet.predict.interpolator import ModelInterpolator

    overrides = {"net": {"variant": "zaugnet+", **(TINY_NET if net == "tiny" else {})}}
    config = build_config({"preset": "small"}, overrides)
    student = Student(config.net).to(device).eval()
    return ModelInterpolator(student, "zaugnet+", device=device)


def make_volume(path: Path, n_z: int, size: int) -> float:
    """A smooth-plus-texture uint16 OME-Zarr volume (chunks 1 x 512 x 512), written band by band; its MB."""
    from zaugnet.io.omezarr import create_ome_zarr
    from zaugnet.io.tiff import VoxelSize

    array = create_ome_zarr(path, (n_z, size, size), np.uint16, "ZYX", VoxelSize(0.6, 0.2, 0.2), chunk_yx=512,
                            overwrite=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:512, 0:size].astype(np.float32)
    for z in range(n_z):
        for y0 in range(0, size, 512):
            band = 20000 + 15000 * np.sin((xx + 3 * z) / 37.0) * np.cos((yy + y0) / 23.0)
            band += rng.normal(0, 500, band.shape).astype(np.float32)
            array[z, y0:y0 + 512] = np.clip(band, 0, 65535).astype(np.uint16)[: size - y0]
    return n_z * size * size * 2 / 1e6


def _status(key: str) -> float:
    return int(re.search(key + r":\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def child_memory(folder: Path, net: str, chunk: int) -> None:
    """(In a fresh process) warm up, reset the peak, predict ``big.ome.zarr``; print the figures."""
    from zaugnet.io.omezarr import write_ome_zarr
    from zaugnet.predict.outofcore import predict_large
    from zaugnet.predict.plan import make_plan

    model = make_model(net)
    # 3 x 3 blocks: the middle one reads a full block plus halo, so the warm-up reaches the per-block peak
    small = np.random.default_rng(0).integers(0, 40000, (3, 3 * chunk, 3 * chunk)).astype(np.uint16)
    write_ome_zarr(folder / "warm.ome.zarr", small, overwrite=True)
    predict_large(folder / "warm.ome.zarr", folder / "warm_out.ome.zarr", make_plan(3, 0.6, factor=2), model,
                  chunk_yx=chunk, progress=False, overwrite=True)
    reset = Path("/proc/self/clear_refs")
    before = _status("VmRSS")
    if reset.exists():
        reset.write_text("5")
    t0 = time.perf_counter()
    from zaugnet.io.omezarr import open_large

    n_z = open_large(folder / "big.ome.zarr").n_z
    predict_large(folder / "big.ome.zarr", folder / "big_out.ome.zarr", make_plan(n_z, 0.6, factor=2), model,
                  chunk_yx=chunk, progress=False, overwrite=True)
    seconds = time.perf_counter() - t0
    print(f"RESULT {_status('VmHWM'):.1f} {_status('VmHWM') - before:.1f} {seconds:.2f}")


def say(lines: list[str], text: str) -> None:
    """Print a line of the report now and keep it for ``big_volume.md``."""
    print(text, flush=True)
    lines.append(text)


def memory_table(folder: Path, args: argparse.Namespace, lines: list[str]) -> list[tuple[float, float, float]]:
    """Peak RSS per volume size; returns (volume MB, peak MB, growth MB) per size."""
    arenas = f", MALLOC_ARENA_MAX={args.malloc_arena_max}" if args.malloc_arena_max else ""
    say(lines, f"\n## peak memory vs volume size ({args.net} network, factor 2, chunk {args.chunk}, "
        f"threaded scheduler, {os.cpu_count()} workers{arenas})\n")
    say(lines, "| volume (Z x Y x X uint16) | MB | peak RSS (MB) | growth over warm-up (MB) | time (s) | "
        "Mvoxel out/s |")
    say(lines, "|---|---|---|---|---|---|")
    points = []
    for size in args.sizes:
        mb = make_volume(folder / "big.ome.zarr", args.slices, size)
        env = {**os.environ, **({"MALLOC_ARENA_MAX": str(args.malloc_arena_max)} if args.malloc_arena_max else {})}
        result = subprocess.run([sys.executable, __file__, "--child-memory", str(folder), "--net", args.net,
                                 "--chunk", str(args.chunk)], capture_output=True, text=True, env=env)
        found = re.search(r"RESULT (\S+) (\S+) (\S+)", result.stdout)
        if result.returncode or not found:
            say(lines, f"| {args.slices} x {size} x {size} | {mb:.0f} | failed: {result.stderr.strip()[-300:]} |")
            continue
        peak, growth, seconds = (float(v) for v in found.groups())
        out_vox = (2 * args.slices - 1) * size * size / 1e6
        say(lines, f"| {args.slices} x {size} x {size} | {mb:.0f} | {peak:.0f} | {growth:.0f} | {seconds:.1f} | "
            f"{out_vox / seconds:.2f} |")
        points.append((mb, peak, growth))
        shutil.rmtree(folder / "big_out.ome.zarr", ignore_errors=True)
    return points


def throughput_table(folder: Path, args: argparse.Namespace, lines: list[str]) -> list[tuple[str, int, float]]:
    """Blocks per second per scheduler and worker count; returns (scheduler, workers, blocks/s) rows."""
    from zaugnet.predict.outofcore import predict_large
    from zaugnet.predict.plan import make_plan

    n_z, size = 5, args.throughput_size
    mb = make_volume(folder / "tp.ome.zarr", n_z, size)
    plan = make_plan(n_z, 0.6, factor=2)
    model = make_model(args.net)
    blocks = (n_z - 1) * (-(-size // args.chunk)) ** 2
    say(lines, f"\n## throughput vs dask workers ({n_z} x {size} x {size} uint16, {mb:.0f} MB, factor 2: {blocks} "
        f"blocks of {args.chunk} px + halo 128, {args.net} network)\n")
    say(lines, "| scheduler | workers | time (s) | blocks/s | Mvoxel out/s |")
    say(lines, "|---|---|---|---|---|")
    points = []
    out = folder / "tp_out.ome.zarr"
    make_volume(folder / "warm.ome.zarr", 2, 2 * args.chunk)

    def warm_up(**options: object) -> None:  # imports, allocator, first calls (on the workers too)
        predict_large(folder / "warm.ome.zarr", folder / "warm_out.ome.zarr", make_plan(2, 0.6, factor=2), model,
                      chunk_yx=args.chunk, progress=False, overwrite=True, **options)

    warm_up(num_workers=max(args.workers))
    out_vox = len(plan.positions) * size * size / 1e6
    for workers in args.workers:
        t0 = time.perf_counter()
        predict_large(folder / "tp.ome.zarr", out, plan, model, chunk_yx=args.chunk, progress=False,
                      overwrite=True, num_workers=workers)
        s = time.perf_counter() - t0
        say(lines, f"| threads | {workers} | {s:.1f} | {blocks / s:.2f} | {out_vox / s:.2f} |")
        points.append(("threads", workers, blocks / s))
    if not args.no_distributed:
        import dask
        from distributed import Client, LocalCluster

        # dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536 (return freed memory at once), which
        # makes torch's CPU forward pass much slower (every call page-faults its buffers anew); the second row
        # starts them with glibc's default (dynamic) thresholds instead.
        environ = dask.config.get("distributed.nanny.pre-spawn-environ")
        for label, env in (("dask defaults", environ),
                           ("no MALLOC_TRIM_THRESHOLD_", {k: v for k, v in environ.items()
                                                           if k != "MALLOC_TRIM_THRESHOLD_"})):
            os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)  # the nanny sets it in this process too
            with dask.config.set({"distributed.nanny.pre-spawn-environ": env}), \
                    LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                 silence_logs=50) as cluster, Client(cluster) as client:
                client.run(lambda: __import__("torch").set_num_threads(1))
                warm_up(client=client)
                t0 = time.perf_counter()
                predict_large(folder / "tp.ome.zarr", out, plan, model, chunk_yx=args.chunk, progress=False,
                              overwrite=True, client=client)
                s = time.perf_counter() - t0
            say(lines, f"| distributed LocalCluster, 2 processes ({label}) | 2 x 1 thread | {s:.1f} | "
                f"{blocks / s:.2f} | {out_vox / s:.2f} |")
            points.append((f"distributed ({label})", 2, blocks / s))
        os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return points


def plot(memory: list[tuple[float, float, float]], throughput: list[tuple[str, int, float]], path: Path) -> None:
    """Peak memory versus volume size (left) and blocks per second versus workers (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    if memory:
        mb, peak, growth = zip(*memory)
        left.plot(mb, peak, "o-", label="peak RSS")
        left.plot(mb, growth, "s--", label="growth over warm-up")
        left.plot(mb, mb, ":", color="grey", label="volume size")
    left.set(xlabel="input volume (MB)", ylabel="MB", title="memory vs volume size")
    left.legend()
    for scheduler in dict.fromkeys(s for s, _, _ in throughput):
        rows = [(w, r) for s, w, r in throughput if s == scheduler]
        right.plot(*zip(*rows), "o-" if len(rows) > 1 else "D", label=scheduler)
    right.set(xlabel="workers", ylabel="blocks / s", title="throughput vs workers")
    right.set_xticks(sorted({w for _, w, _ in throughput}) or [1])
    right.legend(fontsize=7)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=["tiny", "small"], default="tiny")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 6144], help="N of the N x N slices")
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--throughput-size", type=int, default=2048)
    parser.add_argument("--no-distributed", action="store_true")
    parser.add_argument("--malloc-arena-max", type=int, help="MALLOC_ARENA_MAX for the memory runs (glibc keeps "
                        "freed memory per thread arena; 2 shows the working set without that)")
    parser.add_argument("--folder", help="scratch folder (default: a temporary one, removed at the end)")
    parser.add_argument("-o", "--out", type=Path, help="folder for big_volume.md and big_volume.png")
    parser.add_argument("--child-memory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        child_memory(Path(args.child_memory), args.net, args.chunk)
        return
    import torch

    lines: list[str] = []
    say(lines, f"# out-of-core prediction ({platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads; load average {os.getloadavg()[0]:.1f})\n\n"
        f"Command: `python benchmarks/big_volume.py {' '.join(sys.argv[1:])}`")
    with tempfile.TemporaryDirectory(prefix="zaugnet-bigvol-", dir=args.folder) as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        memory = memory_table(folder, args, lines)
        throughput = throughput_table(folder, args, lines)
        say(lines, f"\n(total {time.perf_counter() - t0:.0f} s)")
    if args.out:
        from zaugnet.atomic import atomic_path, atomic_write_text

        atomic_write_text(args.out / "big_volume.md", "\n".join(lines) + "\n")
        with atomic_path(args.out / "big_volume.png") as tmp_png:
            plot(memory, throughput, tmp_png)


if __name__ == "__main__":
    main()
