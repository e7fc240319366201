"""Figures people would rather look at than numbers: training curves, orthogonal views, per-slice PSNR.

- :func:`plot_training_curves`: losses and validation PSNR of a training run;
- :func:`plot_z_augmentation`: XZ / YZ views of a stack before and after z-augmentation (``predict --figure``);
- :func:`plot_orthogonal_views`: XZ / YZ views of a ground truth beside reconstructions (``evaluate``);
- :func:`plot_per_slice_psnr`: PSNR of each predicted slice per method (``evaluate``).

Every figure is a PNG written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .atomic import atomic_path  # noqa: E402
from .evaluate.metrics import psnr as psnr_metric  # noqa: E402
from .evaluate.metrics import to_8bit  # noqa: E402
from .io.tiff import VoxelSize  # noqa: E402


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
    return _save(fig, path)


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
    return _save(fig, path, dpi=110)


def plot_orthogonal_views(
    gt: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    voxel_size_zyx: VoxelSize | Sequence[float | None],
    path: str | Path,
    y: int | None = None,
    x: int | None = None,
    *,
    psnr: Mapping[str, float] | None = None,
) -> Path:
    """XZ and YZ views of the ground truth beside each method's factor-2 reconstruction, as a PNG.

    Parameters
    ----------
    gt
        The ground-truth (Z, Y, X) volume.
    predictions
        Method -> factor-2 reconstruction aligned with ``gt[:len(prediction)]`` (even slices kept,
        odd slices predicted). All views are cut to the shortest reconstruction.
    voxel_size_zyx
        Physical voxel size (a VoxelSize or (z, y, x)); z is stretched by z/x (XZ) and z/y (YZ).
        Unknown sizes count as 1.
    path
        The PNG to write (atomically).
    y, x
        Where the XZ and YZ planes cut the volume; the centre by default.
    psnr
        Method -> PSNR shown in the titles; by default the 8-bit PSNR of the odd (predicted) slices,
        with the 8-bit mapping taken from the ground truth's min/max.

    Returns
    -------
    Path
        The written file.
    """
    gt = np.asarray(gt)
    predictions = {method: np.asarray(pred) for method, pred in predictions.items()}
    depth = min([len(gt), *(len(p) for p in predictions.values())])
    for method, pred in predictions.items():
        if pred.shape[1:] != gt.shape[1:]:
            raise ValueError(f"{method}: slices of shape {pred.shape[1:]} do not match the ground truth's "
                             f"{gt.shape[1:]}")
    y = gt.shape[1] // 2 if y is None else y
    x = gt.shape[2] // 2 if x is None else x
    vz, vy, vx = _voxel_size(voxel_size_zyx)
    volumes = {"ground truth": gt[:depth], **{m: p[:depth] for m, p in predictions.items()}}
    titles = {"ground truth": "ground truth"}
    for method, pred in predictions.items():
        score = psnr[method] if psnr is not None and method in psnr else _odd_slice_psnr(gt, pred[:depth])
        titles[method] = f"{method}\nPSNR {score:.2f} dB"
    vmin, vmax = np.percentile(gt, [0.5, 99.5])
    views = (("XZ", f"y = {y}", lambda v: v[:, y, :], vz / vx), ("YZ", f"x = {x}", lambda v: v[:, :, x], vz / vy))
    columns = len(volumes)
    heights = [depth * aspect / width for (_, _, _, aspect), width in zip(views, (gt.shape[2], gt.shape[1]))]
    panel = 3.0
    fig, axes = plt.subplots(
        2, columns, squeeze=False, constrained_layout=True,
        figsize=(panel * columns, min(max(panel * sum(heights) + 1.2, 2.5), 16.0)),
        gridspec_kw={"height_ratios": [max(h, 0.05) for h in heights]},
    )
    for row, (view, where, cut, aspect) in enumerate(views):
        for col, (method, volume) in enumerate(volumes.items()):
            ax = axes[row, col]
            ax.imshow(cut(volume), cmap="gray", vmin=vmin, vmax=vmax, aspect=aspect, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[method], fontsize=9)
            if col == 0:
                ax.set_ylabel(f"{view} ({where})\nz", fontsize=9)
    return _save(fig, path)


def plot_per_slice_psnr(per_slice: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path) -> Path:
    """PSNR of each predicted slice against its z index, one curve per method, as a PNG.

    ``per_slice`` maps a method to ``(z, psnr)`` (see ``VolumeEvaluation.per_slice``). Infinite
    PSNR (an exact slice) is left out of the curve.
    """
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for method, (z, values) in per_slice.items():
        values = np.asarray(values, dtype=np.float64)
        ax.plot(np.asarray(z), np.where(np.isfinite(values), values, np.nan), marker=".", label=method)
    ax.set(xlabel="z index of the predicted slice", ylabel="PSNR (dB, 8-bit scale)", title="per-slice PSNR, factor 2")
    if per_slice:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _voxel_size(size: VoxelSize | Sequence[float | None]) -> tuple[float, float, float]:
    values = (size.z, size.y, size.x) if isinstance(size, VoxelSize) else tuple(size)
    if len(values) != 3:
        raise ValueError(f"voxel size must be (z, y, x), got {values!r}")
    return tuple(float(v) if v else 1.0 for v in values)  # type: ignore[return-value]


def _odd_slice_psnr(gt: np.ndarray, pred: np.ndarray) -> float:
    """Mean 8-bit PSNR over the odd slices (those a factor-2 reconstruction predicts)."""
    low, high = float(gt.min()), float(gt.max())
    if high == low or len(pred) < 2:
        return float("nan")
    with np.errstate(divide="ignore"):  # an exact slice has PSNR inf
        scores = [psnr_metric(to_8bit(pred[z], low, high), to_8bit(gt[z], low, high), data_range=255.0)
                  for z in range(1, len(pred), 2)]
    return float(np.mean(scores))


def _save(fig: plt.Figure, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path
