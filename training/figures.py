"""Figures people would rather look at than numbers: training curves, z-augmentation views."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import numpy as np  # noqa: E402

from .atomic import atomic_path  # noqa: E402


def plot_training_curves(history: Sequence[dict[str, float]], path: str | Path) -> Path:
    """Losses and validation PSNR (model vs linear interpolation) against training step, as a PNG."""
    steps = [row["step"] for row in history]
    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for key in ("loss_g", "loss_rec", "loss_flow", "loss_teacher", "loss_distill", "val_loss"):
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
    if ax_psnr.lines:
        ax_psnr.legend(fontsize=8)
    else:
        ax_psnr.text(0.5, 0.5, "no validation set", ha="center", va="center", transform=ax_psnr.transAxes)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def plot_z_augmentation(before: np.ndarray, after: np.ndarray, z_before: float, z_after: float,
                        pixel_yx: tuple[float, float], path: str | Path, *, title: str = "",
                        unit: str = "um") -> Path:
    """Orthogonal XZ and YZ views through the centre of a volume before and after z-augmentation, as a PNG.

    Both are drawn at their physical aspect (each slice centred on its z and as thick as the spacing), so
    the input's coarse z sampling and the augmented one can be compared directly. Spacings of 0 or
    unknown count as 1. Grey levels: the input's 0.5-99.5 percentiles, shared by all panels.
    """
    before, after = np.asarray(before, dtype=np.float32), np.asarray(after, dtype=np.float32)
    vy, vx = (v or 1.0 for v in pixel_yx)
    y, x = before.shape[1] // 2, before.shape[2] // 2
    vmin, vmax = np.percentile(before, [0.5, 99.5])
    rows = (("before", before, z_before or 1.0), ("after", after, z_after or 1.0))
    top, bottom = min(-dz / 2 for _, _, dz in rows), max((len(v) - 0.5) * dz for _, v, dz in rows)
    depth = bottom - top
    width_x, width_y = before.shape[2] * vx, before.shape[1] * vy
    fig, axes = plt.subplots(2, 2, squeeze=False, constrained_layout=True,
                             figsize=(8.0, min(max(2 * 4.0 * depth / max(width_x, width_y) + 1.2, 3.0), 14.0)))
    for row, (label, vol, dz) in enumerate(rows):
        for col, (plane, extent_w, cut) in enumerate(((vol[:, y, :], width_x, f"XZ at y = {y}"),
                                                      (vol[:, :, x], width_y, f"YZ at x = {x}"))):
            ax = axes[row][col]
            ax.imshow(plane, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest",
                      extent=(0, extent_w, (len(vol) - 0.5) * dz, -dz / 2), aspect="equal")
            ax.set_title(f"{label}: {len(vol)} slices, z step {dz:g} {unit} ({cut})", fontsize=8)
            ax.set(xlabel=unit, ylabel=f"z ({unit})")
            ax.set_ylim(bottom, top)
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
