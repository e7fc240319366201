"""A self-check that needs no ground truth: does the model beat cubic interpolation on this stack?

Before predicting, every other slice of the user's own volume is held out and predicted back from
its neighbours at twice the volume's spacing, by the model and by cubic interpolation, and scored
with the paper's protocol (PSNR and SSIM on the volume's 8-bit scale). ``--method auto`` then uses
the better of the two for that volume: the model only where it scores strictly higher PSNR there.
Where the volume has too few slices to check (fewer than 5, so fewer than two held-out slices),
cubic interpolation is used.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .predict import ModelInterpolator

#: Fewest slices a volume needs for the self-check (two held-out slices).
MIN_SLICES = 5
#: Columns of :func:`judge_self_checks` rows (``selfcheck.csv``).
JUDGEMENT_FIELDS = ("stack", "factor", "model", "choice", "check_margin_db", "true_margin_db", "right",
                    "n_held_out")


@dataclass(frozen=True)
class SelfCheck:
    """The outcome of :func:`self_check` on one volume."""

    volume: str
    model: str
    n_held_out: int
    model_psnr: float
    cubic_psnr: float
    model_ssim: float
    cubic_ssim: float
    choice: str  # "model" or "cubic"
    skipped: str = ""  # why nothing was checked (too few slices, constant volume)

    @property
    def margin(self) -> float:
        """Model minus cubic PSNR (dB, 8-bit scale) on the held-out slices."""
        return self.model_psnr - self.cubic_psnr

    def message(self) -> str:
        """One line for the user: the figures, the choice and why."""
        if self.n_held_out == 0:
            return (f"self-check {self.volume}: {self.skipped}, nothing to check {self.model} on; "
                    "using cubic interpolation")
        chosen = self.model if self.choice == "model" else "cubic interpolation"
        why = "scores higher" if self.choice == "model" else "does not score higher than cubic"
        return (f"self-check {self.volume}: every other slice held out ({self.n_held_out}) and predicted at twice the "
                f"spacing: {self.model} {self.model_psnr:.2f} dB / SSIM {self.model_ssim:.3f}, cubic "
                f"{self.cubic_psnr:.2f} dB / SSIM {self.cubic_ssim:.3f} (8-bit scale); {self.model} {why} "
                f"({self.margin:+.2f} dB), using {chosen}")


def self_check(volume: np.ndarray, model: ModelInterpolator, name: str = "volume", *,
               progress: bool = False) -> SelfCheck:
    """Score ``model`` against cubic interpolation on every other slice of ``volume`` (Z, Y, X).

    With ``progress``, a bar shows the model's held-out predictions.

    Returns
    -------
    SelfCheck
        ``choice`` is ``"model"`` only if the model's PSNR is strictly higher.
    """
    from .evaluate import evaluate_volume

    nan = float("nan")
    if volume.shape[0] < MIN_SLICES:
        skipped = f"{volume.shape[0]} slices, fewer than the {MIN_SLICES} the check needs"
        return SelfCheck(name, model.name, 0, nan, nan, nan, nan, "cubic", skipped)
    if float(np.min(volume)) == float(np.max(volume)):
        skipped = f"the volume is constant (every voxel {float(np.min(volume)):g})"
        return SelfCheck(name, model.name, 0, nan, nan, nan, nan, "cubic", skipped)
    ev = evaluate_volume(np.asarray(volume), {"model": model, "cubic": "cubic"}, 2, name=name, positions_check=(),
                         progress=progress)
    rows = {r["method"]: r for r in ev.rows if r["factor"] == 2 and r["position"] == "all"}
    m, c = rows["model"], rows["cubic"]
    better = bool(np.isfinite(m["psnr_8bit"]) and m["psnr_8bit"] > c["psnr_8bit"])
    return SelfCheck(name, model.name, int(m["n_slices"]), m["psnr_8bit"], c["psnr_8bit"], m["ssim_8bit"],
                     c["ssim_8bit"], "model" if better else "cubic")


@dataclass
class AutoMethod:
    """``--method auto``: per volume, the model or cubic interpolation, whichever wins :func:`self_check`.

    Parameters
    ----------
    model
        The trained model to check.
    report
        Called with each check's message (default: print to standard error).
    progress
        Show a progress bar while the check runs.
    """

    model: ModelInterpolator
    report: Callable[[str], None] | None = None
    checks: list[SelfCheck] = field(default_factory=list)
    progress: bool = False

    @property
    def name(self) -> str:
        """``auto(<model name>)``."""
        return f"auto({self.model.name})"

    def choose(self, volume: np.ndarray) -> str | ModelInterpolator:
        """Run the self-check on ``volume``, record and report it, and return the method to use."""
        check = self_check(volume, self.model, f"volume {len(self.checks) + 1}", progress=self.progress)
        self.checks.append(check)
        (self.report or (lambda text: print(text, file=sys.stderr)))(check.message())
        return self.model if check.choice == "model" else "cubic"


def judge_self_checks(rows: Sequence[dict], auto: AutoMethod) -> list[dict]:
    """Was each self-check's choice right? Pairs the checks ``auto`` ran during one :func:`evaluate_volume`
    (one per factor, in the rows' order) with the true scores of the model and cubic in ``rows``.

    Returns one dict per factor: ``stack``, ``factor``, ``choice``, ``check_margin_db`` (model minus
    cubic PSNR on the self-check), ``true_margin_db`` (the same on the evaluation's ground truth) and
    ``right`` (the choice is the method with the higher true PSNR; a tie counts cubic as right).
    """
    scores = {(r["method"], r["factor"]): r for r in rows if r["position"] == "all"}
    factors = sorted({r["factor"] for r in rows})
    recent = auto.checks[-len(factors):] if len(auto.checks) >= len(factors) else []
    out = []
    for f, check in zip(factors, recent):
        model, cubic = scores.get((auto.model.name, f)), scores.get(("cubic", f))
        if model is None or cubic is None:
            continue
        true_margin = model["psnr_8bit"] - cubic["psnr_8bit"]
        right = (check.choice == "model") == bool(true_margin > 0)
        out.append({"stack": model["stack"], "factor": f, "model": auto.model.name, "choice": check.choice,
                    "check_margin_db": check.margin, "true_margin_db": true_margin, "right": right,
                    "n_held_out": check.n_held_out})
    return out
