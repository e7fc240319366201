"""Time per training step for each preset and variant on this machine.

Usage: python benchmarks/train_step.py [--steps 5] [--device cpu] [--threads N]

Synthetic phantom volumes, the preset's own crop and batch size, generator-only and adversarial
modes. Prints a markdown table (seconds per step, median of --steps after one warm-up step).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import numpy as np
import torch
from zaugnet.training.config import build_config
from zaugnet.training.trainer import Trainer, TrainingData

from zaugnet.phantoms import simulate_stack


def time_steps(preset: str, variant: str, lambda_adv: float, steps: int, device: str, volumes: list) -> float:
    """Median seconds per training step (one warm-up step first)."""
    cfg = build_config({"preset": preset, "net": {"variant": variant},
                        "train": {"lambda_adv": lambda_adv, "n_critic": 1, "device": device}})
    trainer = Trainer(cfg, TrainingData([str(i) for i in range(len(volumes))], volumes), tempfile.mkdtemp())
    times = []
    for step in range(steps + 1):
        x, gt = trainer.sampler.batch(trainer.train_triplets, cfg.train.batch_size, 0, step)
        t0 = time.perf_counter()
        trainer.train_step(x.to(trainer.device), gt.to(trainer.device))
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        trainer.step += 1
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    volumes = [simulate_stack((12, 256, 256), seed=s).astype(np.float32) for s in range(2)]
    print(f"# training step time ({platform.processor() or platform.machine()}, {args.device}, "
          f"{args.threads} threads, torch {torch.__version__})\n")
    print("| preset | variant | crop | batch | generator only (s/step) | with critic, n_critic=1 (s/step) |")
    print("|---|---|---|---|---|---|")
    for preset in ("small", "paper"):
        for variant in ("zaugnet", "zaugnet+"):
            cfg = build_config({"preset": preset})
            row = [time_steps(preset, variant, lam, args.steps, args.device, volumes) for lam in (0.0, 0.001)]
            print(f"| {preset} | {variant} | {cfg.data.crop_size} | {cfg.train.batch_size} | "
                  f"{row[0]:.3f} | {row[1]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
