"""The paper's evaluation protocol: drop slices from a high-resolution stack, predict them back, score them.

For each factor ``f`` (2 and the requested one), every ``f``-th slice of a ground-truth stack is kept
(``gt[::f]``, over the first ``(n - 1) // f * f + 1`` slices so the last kept slice is a real one),
the stack is predicted back at the original spacing, and only the predicted slices are scored
against the ground truth: RMSE, PSNR and SSIM per slice, then the mean over slices. Scores are given
twice: on the paper's 8-bit scale (ground truth and prediction mapped by the same affine transform
from the ground-truth stack's min/max to [0, 255], clipped, not rounded; data range 255) and in the
input's units (data range: the ground-truth stack's max - min).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..io.tiff import Stack, iter_volumes
from ..predict.plan import check_factor, plan_factor
from ..predict.volume import Method, interpolate_volume
from .metrics import psnr, rmse, ssim, texture_ratio, to_8bit

__all__ = [
    "FIELDS",
    "METRICS",
    "VolumeEvaluation",
    "evaluate_stack",
    "evaluate_volume",
    "format_table",
    "summarize",
]

#: Metric columns of a row, in table order.
METRICS: tuple[str, ...] = ("rmse_8bit", "psnr_8bit", "ssim_8bit", "rmse", "psnr", "ssim", "texture")
#: All columns of a row, in table and CSV order.
FIELDS: tuple[str, ...] = ("stack", "method", "factor", "position", "n_slices", *METRICS, "note")
_FORMATS = {"rmse_8bit": ".3f", "psnr_8bit": ".2f", "ssim_8bit": ".4f", "rmse": ".4g", "psnr": ".2f", "ssim": ".4f",
            "texture": ".3f"}


@dataclass
class VolumeEvaluation:
    """Scores of several methods on one ground-truth volume.

    Attributes
    ----------
    stack
        The volume's name, as in the rows.
    rows
        One dict per (method, factor, position) with the keys in :data:`FIELDS`.
    per_slice
        For the factor-2 run of each method: ``(z, psnr_8bit)``, the ground-truth indices of the
        predicted slices and their PSNR on the 8-bit scale.
    predictions
        For the factor-2 run of each method: the reconstructed float32 volume, aligned with
        ``gt[:len(prediction)]`` (even slices kept, odd slices predicted).
    """

    stack: str
    rows: list[dict] = field(default_factory=list)
    per_slice: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)


def evaluate_volume(
    gt: np.ndarray,
    methods: Mapping[str, Method],
    factor: int = 2,
    *,
    name: str = "stack",
    positions_check: Sequence[float] = (0.25, 0.5, 0.75),
    progress: bool = False,
) -> VolumeEvaluation:
    """Score each method at factor 2 and ``factor`` on one high-resolution (Z, Y, X) volume.

    Parameters
    ----------
    gt
        The ground-truth stack.
    methods
        Row label -> method for :func:`~zaugnet.predict.volume.interpolate_volume`
        (a baseline's name, a ModelInterpolator, or a method that resolves itself per volume).
    factor
        An integer >= 2 (ZAugNet needs a power of two; a method that cannot serve a factor gets a
        row of NaN scores whose ``note`` says why).
    name
        The volume's name in the rows and errors.
    positions_check
        Relative z positions inside a gap scored on their own for factors above 2 (those that fall
        on a slice, e.g. 0.25, 0.5 and 0.75 for factor 4), besides ``"all"``.
    progress
        Show a progress bar while a model predicts.

    Returns
    -------
    VolumeEvaluation

    Raises
    ------
    InputError
        If ``factor`` is not an integer >= 2, or the volume is not 3D, constant, not finite, or has
        too few slices for the factor.
    """
    factors = _factors(factor)
    gt = _check_volume(gt, name, max(factors))
    low, high = float(gt.min()), float(gt.max())
    result = VolumeEvaluation(stack=name)
    for f in factors:
        truth = gt[:(gt.shape[0] - 1) // f * f + 1]
        kept = truth[::f]
        predicted_z = np.array([z for z in range(len(truth)) if z % f])
        groups = {"all": predicted_z, **_position_groups(predicted_z, f, positions_check)}
        for label, method in methods.items():
            base = {"stack": name, "method": label, "factor": f}
            try:
                pred = interpolate_volume(kept, plan_factor(len(kept), f), method, progress=progress)
            except InputError as exc:
                result.rows.extend(_na_row(base, pos, len(z), exc.problem) for pos, z in groups.items())
                continue
            scores = _slice_scores(truth, pred, predicted_z, low, high)
            for pos, z in groups.items():
                idx = np.searchsorted(predicted_z, z)
                row = {**base, "position": pos, "n_slices": len(z)}
                row.update({key: float(np.mean(values[idx])) for key, values in scores.items()})
                result.rows.append({**row, "note": ""})
            if f == 2:
                result.per_slice[label] = (predicted_z, scores["psnr_8bit"])
                result.predictions[label] = pred
    return result


def evaluate_stack(
    stack: Stack,
    methods: Mapping[str, Method],
    factor: int = 2,
    *,
    positions_check: Sequence[float] = (0.25, 0.5, 0.75),
) -> Iterator[tuple[np.ndarray, VolumeEvaluation]]:
    """Run :func:`evaluate_volume` on each time point and channel of a stack read by ``read_stack``.

    Yields each ground-truth volume with its evaluation. Volumes are named after the file
    (``"cells.tif"``, or ``"cells.tif[t0_c1]"`` for one of several).
    """
    base = stack.path.name if stack.path is not None else "stack"
    for label, volume in iter_volumes(stack):
        volume = np.asarray(volume)
        yield volume, evaluate_volume(volume, methods, factor, name=f"{base}[{label}]" if label else base,
                                      positions_check=positions_check)


def summarize(rows: Iterable[dict]) -> list[dict]:
    """Mean of each metric over stacks per (method, factor, position), as rows with stack "overall".

    ``n_slices`` is the total over stacks; ``note`` keeps the first non-empty note of the group.
    """
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["factor"], row["position"]), []).append(row)
    summary = []
    for (method, f, position), members in groups.items():
        row = {"stack": "overall", "method": method, "factor": f, "position": position,
               "n_slices": sum(m["n_slices"] for m in members)}
        row.update({key: float(np.mean([m[key] for m in members])) for key in METRICS})
        row["note"] = next((m["note"] for m in members if m.get("note")), "")
        summary.append(row)
    return summary


def format_table(rows: Sequence[dict]) -> str:
    """A fixed-width text table of the rows (``n/a`` for missing scores; a note column if any)."""
    columns = [c for c in FIELDS if c != "note" or any(r.get("note") for r in rows)]
    cells = [[_format_cell(c, r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(line[i]) for line in cells)]) for i, c in enumerate(columns)]
    numeric = {"factor", "n_slices", *METRICS}

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if c in numeric else v.ljust(w) for c, v, w in zip(columns, values, widths)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(columns), rule, *(line(values) for values in cells)])


# --- helpers -----------------------------------------------------------------------------------


def _factors(factor: int) -> list[int]:
    return sorted({2, check_factor(factor)})


def _check_volume(gt: np.ndarray, name: str, factor: int) -> np.ndarray:
    gt = np.asarray(gt)
    if gt.ndim != 3:
        raise InputError(name, f"must be a 3D (z, y, x) volume, got shape {gt.shape}")
    if gt.shape[0] < factor + 1:
        raise InputError(
            name,
            f"has {gt.shape[0]} z-slice(s); evaluating factor {factor} needs at least {factor + 1} "
            f"(slices 0 and {factor} are kept and those between them predicted)",
        )
    if gt.dtype.kind == "f" and not np.isfinite(gt).all():
        raise InputError(name, "contains NaN or infinite values")
    if gt.max() == gt.min():
        raise InputError(name, "is constant; PSNR and SSIM need a non-zero intensity range")
    return gt


def _position_groups(predicted_z: np.ndarray, f: int, positions: Sequence[float]) -> dict[float, np.ndarray]:
    """Relative position -> predicted slices at that offset inside each gap (factors above 2 only)."""
    if f <= 2:
        return {}
    groups = {}
    for position in positions:
        offset = position * f
        if 0 < offset < f and math.isclose(offset, round(offset)):
            groups[float(position)] = predicted_z[predicted_z % f == round(offset)]
    return groups


def _slice_scores(truth: np.ndarray, pred: np.ndarray, zs: np.ndarray, low: float, high: float) -> dict:
    """Each metric of :data:`METRICS` for each slice in ``zs``, as arrays aligned with ``zs``."""
    scores: dict[str, list[float]] = {key: [] for key in METRICS}
    with np.errstate(divide="ignore"):  # an exact slice has PSNR inf
        for z in zs:
            _score_slice(scores, truth[z], pred[z], low, high)
    return {key: np.asarray(values) for key, values in scores.items()}


def _score_slice(scores: dict[str, list[float]], truth: np.ndarray, pred: np.ndarray, low: float, high: float) -> None:
    t, p = np.asarray(truth, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    t8, p8 = to_8bit(t, low, high), to_8bit(p, low, high)
    scores["rmse_8bit"].append(rmse(p8, t8))
    scores["psnr_8bit"].append(psnr(p8, t8, data_range=255.0))
    scores["ssim_8bit"].append(ssim(p8, t8, data_range=255.0))
    scores["rmse"].append(rmse(p, t))
    scores["psnr"].append(psnr(p, t, data_range=high - low))
    scores["ssim"].append(ssim(p, t, data_range=high - low))
    scores["texture"].append(texture_ratio(p8, t8))


def _na_row(base: dict, position: str | float, n_slices: int, note: str) -> dict:
    return {**base, "position": position, "n_slices": n_slices, **dict.fromkeys(METRICS, math.nan),
            "note": f"n/a: {note}"}


def _format_cell(column: str, value: object) -> str:
    if value is None:
        return ""
    if column in METRICS:
        value = float(value)  # type: ignore[arg-type]
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return format(value, _FORMATS[column])
    if column == "position" and isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
