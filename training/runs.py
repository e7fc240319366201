"""The layout of a training run folder: what the trainer writes there, and how to find or clear it.

::

    RUN_DIR/config.yaml            the validated configuration
    RUN_DIR/checkpoints/step_*.pt  periodic checkpoints (resume)
    RUN_DIR/final.pt               the last checkpoint (export, predict)
    RUN_DIR/metrics.csv            the history: losses and validation scores per validation step
    RUN_DIR/training_curves.png    the same as a figure
"""

from __future__ import annotations

import shutil
from pathlib import Path

CONFIG = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
FINAL = "final.pt"
METRICS = "metrics.csv"
CURVES = "training_curves.png"
#: Everything a run writes, in the order above.
FILES = (CONFIG, CHECKPOINT_DIR, FINAL, METRICS, CURVES)


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """Where the periodic checkpoint of ``step`` goes."""
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def step_checkpoints(run_dir: str | Path) -> dict[int, Path]:
    """The periodic checkpoints of a run, by step."""
    return {int(p.stem.split("_")[1]): p for p in (Path(run_dir) / CHECKPOINT_DIR).glob("step_*.pt")
            if p.stem.split("_")[1].isdigit()}


def existing(run_dir: str | Path) -> list[str]:
    """The names of :data:`FILES` present in ``run_dir`` (a run is there if any is)."""
    return [name for name in FILES if (Path(run_dir) / name).exists()]


def clear(run_dir: str | Path) -> None:
    """Remove what a run wrote in ``run_dir`` (nothing else in the folder is touched)."""
    for name in existing(run_dir):
        target = Path(run_dir) / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
