"""Figures people would rather look at than numbers: training curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .atomic import atomic_path  # noqa: E402


def plot_training_curves(history: Sequence[dict[str, float]], path: str | Path) -> Path:
    """Losses and validation PSNR (model vs linear interpolation) against training step, as a PNG."""
    steps = [row["step"] for row in history]
    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for key in ("loss_g", "loss_rec", "loss_teacher", "loss_distill", "val_loss"):
        pts = [(s, row[key]) for s, row in zip(steps, history) if key in row]
        if pts:
            ax_loss.plot(*zip(*pts), marker=".", label=key)
    ax_loss.set(xlabel="step", ylabel="loss", yscale="log", title="losses")
    ax_loss.legend(fontsize=8)
    for key, label in (("val_psnr", "model"), ("val_psnr_linear", "linear interpolation")):
        pts = [(s, row[key]) for s, row in zip(steps, history) if key in row]
        if pts:
            ax_psnr.plot(*zip(*pts), marker=".", label=label)
    ax_psnr.set(xlabel="step", ylabel="PSNR (dB, normalised pair range)", title="validation")
    ax_psnr.legend(fontsize=8)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
