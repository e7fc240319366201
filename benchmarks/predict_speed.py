"""Prediction speed of the student in pairs per second, at 256 x 256 and 1024 x 1024.

Usage: python benchmarks/predict_speed.py [--checkpoint RUN_DIR/final.pt] [--preset small|paper]
                                          [--device cpu] [--pairs 8] [--sizes 256 1024]

Times ``ModelInterpolator.predict`` (joint normalisation, tiling with the default tile 512 and halo
128, mapping back to units) on random uint16 pairs; with no checkpoint an untrained network of the
chosen preset is timed (speed does not depend on the weights). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from zaugnet.export.load import from_checkpoint
from zaugnet.training.config import build_config
from zaugnet.training.nets import Student

from zaugnet.predict.interpolator import ModelInterpolator


def pairs_per_second(model: ModelInterpolator, size: int, n_pairs: int) -> float:
    """Pairs per second over ``n_pairs`` pairs of ``size`` x ``size`` (after one warm-up pair)."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4000, (n_pairs, size, size)).astype(np.float32)
    b = rng.integers(0, 4000, (n_pairs, size, size)).astype(np.float32)
    z = np.full(n_pairs, 0.5)
    model.predict(a[:1], b[:1], z[:1])
    t0 = time.perf_counter()
    for i in range(0, n_pairs, model.batch_size):
        model.predict(a[i:i + model.batch_size], b[i:i + model.batch_size], z[i:i + model.batch_size])
    if model.device.startswith("cuda"):
        torch.cuda.synchronize()
    return n_pairs / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--preset", default="small", choices=["small", "paper"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    args = parser.parse_args()
    if args.checkpoint:
        model = from_checkpoint(args.checkpoint, device=args.device)
        label = args.checkpoint
    else:
        net = Student(build_config({"preset": args.preset}).net).to(args.device).eval()
        model = ModelInterpolator(net, "zaugnet", device=args.device)
        label = f"untrained {args.preset} preset"
    print(f"# prediction speed: {label} ({platform.machine()}, {args.device}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__})\n")
    print("| size | pairs/s | s/pair |")
    print("|---|---|---|")
    for size in args.sizes:
        pps = pairs_per_second(model, size, args.pairs)
        print(f"| {size} x {size} | {pps:.2f} | {1 / pps:.3f} |", flush=True)


if __name__ == "__main__":
    main()
