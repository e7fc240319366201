"""A self-check that needs no ground truth: which method predicts this stack's own slices best?

Before predicting, slices of the user's own volume are held out and predicted back from their
neighbours, by the model and by every classical method (linear, Keys cubic, cubic spline), and scored
with the paper's protocol (PSNR and SSIM on the volume's 8-bit scale), twice:

- at twice the volume's spacing: every other slice held out (the midpoints of gaps of 2 slices);
- at four times it: the midpoints of gaps of 4 slices (volumes of at least :data:`MIN_TREND_SLICES`).

``--method auto`` uses the classical method that scores best at twice the spacing, unless the model
beats it there by more than :data:`MODEL_MARGIN_DB` AND its margin, extrapolated from 4x and 2x to the
real spacing, stays above that too: the new slices of a real run sit in gaps of ONE slice, finer than
either check, and a model that wins at twice the spacing but less and less as the spacing shrinks may
lose at the real one. The extrapolation, ``margin_2x + TREND_WEIGHT * (margin_2x - margin_4x)`` with
:data:`TREND_WEIGHT` 1/2, lets the margin change again by half as much as from 4x to 2x: a margin made of
a part that does not depend on the spacing (denoising) and one that decays with it. Measured
(``benchmarks/selfcheck_rules.py --model``, three shipped models, five real stacks they never saw and eight
phantoms): never worse than the full linear extrapolation (weight 1) on any model or factor, and right on
a real stack where weight 1 refused a model that gained 1.4 dB. Without the trend (5 to 8 slices) the model needs
:data:`UNSURE_MARGIN_DB` at twice the spacing. When unsure: classical. Below :data:`MIN_SLICES` slices,
or on a constant volume, nothing is checked and :data:`FALLBACK` is used.

What the check cannot see (measured, ``benchmarks/selfcheck_rules.py``): which classical method wins at
the real spacing. On smooth, finely sampled stacks the spline can win there by several dB while losing
to Keys cubic at twice the spacing; no extrapolation of the 4x-to-2x trend predicted that better than
the 2x scores themselves.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..predict.baselines import BASELINES
from ..predict.interpolator import ModelInterpolator
from .protocol import evaluate_volume

#: Fewest slices a volume needs for the self-check (two held-out slices at twice the spacing).
MIN_SLICES = 5
#: Fewest slices for the check at four times the spacing too (two held-out slices there), hence the trend.
MIN_TREND_SLICES = 9
#: How much better than the best classical method the model must be (dB; at twice the spacing and extrapolated).
MODEL_MARGIN_DB = 0.2
#: How much of the margin's change from 4x to 2x the extrapolation to the real spacing adds again.
TREND_WEIGHT = 0.5
#: The same without the trend: measured at twice the spacing only.
UNSURE_MARGIN_DB = 0.5
#: The method used where nothing can be checked.
FALLBACK = "linear"
#: Columns of :func:`judge_self_checks` rows (``selfcheck.csv``).
JUDGEMENT_FIELDS = ("stack", "factor", "model", "choice", "best", "right", "cost_db", "check_margin_db",
                    "true_margin_db", "n_held_out")


@dataclass(frozen=True)
class SelfCheck:
    """The outcome of :func:`self_check` on one volume.

    ``psnr2`` / ``ssim2``: method -> score at twice the spacing; ``psnr4``: method -> PSNR at four times
    (empty without the trend); ``choice``: ``"model"`` or a classical method's name.
    """

    volume: str
    model: str
    n_held_out: int
    psnr2: Mapping[str, float]
    ssim2: Mapping[str, float]
    psnr4: Mapping[str, float]
    choice: str
    skipped: str = ""  # why nothing was checked (too few slices, constant volume)

    @property
    def best_classical(self) -> str:
        """The classical method that scored best at twice the spacing."""
        return margins(self.psnr2, self.psnr4)[0] if self.psnr2 else FALLBACK

    @property
    def margin(self) -> float:
        """Model minus the best classical method at twice the spacing (dB, 8-bit scale); NaN if unchecked."""
        return margins(self.psnr2, self.psnr4)[1] if self.psnr2 else math.nan

    @property
    def trend_margin(self) -> float:
        """The margin extrapolated to the real spacing from 4x and 2x (``margin_2x + TREND_WEIGHT * (margin_2x -
        margin_4x)``); NaN without the trend."""
        return margins(self.psnr2, self.psnr4)[2] if self.psnr2 else math.nan

    def message(self) -> str:
        """One line for the user: the figures, the choice and why."""
        if self.n_held_out == 0:
            return f"self-check {self.volume}: {self.skipped}, nothing to check; using {FALLBACK} interpolation"
        names = {"model": self.model, **{m: m for m in BASELINES}}
        scores = ", ".join(f"{names[m]} {self.psnr2[m]:.2f}" + (f" / {self.psnr4[m]:.2f}" if self.psnr4 else "")
                           for m in names)
        where = "at twice / four times the spacing" if self.psnr4 else "at twice the spacing"
        best = self.best_classical
        trend = f", {self.trend_margin:+.2f} dB extrapolated to the real spacing" if self.psnr4 else ""
        verdict = "clearly better" if self.choice == "model" else "not clearly better"
        used = self.model if self.choice == "model" else f"{self.choice} interpolation"
        return (f"self-check {self.volume}: held-out slices predicted {where} ({self.n_held_out} at twice; PSNR dB, "
                f"8-bit scale): {scores}; {self.model} {self.margin:+.2f} dB over {best}{trend}: {verdict}; "
                f"using {used}")

def _scores(volume: np.ndarray, methods: Mapping[str, object], name: str, progress: bool,
            ) -> tuple[dict[str, float], dict[str, float], int]:
    """PSNR and SSIM (8-bit scale) of each method on the midpoints of ``volume``'s gaps of 2, and the count."""
    ev = evaluate_volume(np.asarray(volume), methods, 2, name=name, positions_check=(), progress=progress)
    rows = {r["method"]: r for r in ev.rows if r["factor"] == 2 and r["position"] == "all"}
    n = int(next(iter(rows.values()))["n_slices"])
    return ({m: float(r["psnr_8bit"]) for m, r in rows.items()}, {m: float(r["ssim_8bit"]) for m, r in rows.items()},
            n)


def margins(psnr2: Mapping[str, float], psnr4: Mapping[str, float]) -> tuple[str, float, float]:
    """``(best classical method at 2x, model margin over it at 2x, that margin extrapolated to the real spacing)``
    from the check's PSNRs (method -> dB at twice / four times the spacing; ``psnr4`` empty without the trend, and
    the extrapolated margin then NaN). A missing model score gives NaN margins."""
    best = max(BASELINES, key=lambda m: psnr2[m])
    margin2 = psnr2.get("model", math.nan) - psnr2[best]
    if not psnr4:
        return best, margin2, math.nan
    margin4 = psnr4.get("model", math.nan) - max(psnr4[m] for m in BASELINES)
    return best, margin2, margin2 + TREND_WEIGHT * (margin2 - margin4)


def choose(psnr2: Mapping[str, float], psnr4: Mapping[str, float]) -> str:
    """The rule of ``--method auto`` on the check's PSNRs (method -> dB at twice / four times the spacing; ``psnr4``
    empty without the trend): ``"model"`` or a classical method's name (see the module's docstring)."""
    best, margin2, trend = margins(psnr2, psnr4)
    if math.isnan(margin2):  # no model score (an exact model scores +inf and wins: inf - finite > any margin)
        return best
    if math.isnan(trend):  # no trend (too few slices), or no evidence from 4x (a NaN score, exact at both spacings)
        return "model" if margin2 > UNSURE_MARGIN_DB else best
    return "model" if min(margin2, trend) > MODEL_MARGIN_DB else best


def self_check(volume: np.ndarray, model: ModelInterpolator, name: str = "volume", *,
               progress: bool = False) -> SelfCheck:
    """Score ``model`` and every classical method on held-out slices of ``volume`` (Z, Y, X) and choose.

    With ``progress``, a bar shows the model's held-out predictions.

    Returns
    -------
    SelfCheck
        ``choice`` is ``"model"`` or the name of a classical method (:func:`choose`).
    """
    volume = np.asarray(volume)
    if volume.shape[0] < MIN_SLICES:
        skipped = f"{volume.shape[0]} slices, fewer than the {MIN_SLICES} the check needs"
        return SelfCheck(name, model.name, 0, {}, {}, {}, FALLBACK, skipped)
    if float(np.min(volume)) == float(np.max(volume)):
        skipped = f"the volume is constant (every voxel {float(np.min(volume)):g})"
        return SelfCheck(name, model.name, 0, {}, {}, {}, FALLBACK, skipped)
    methods: dict[str, object] = {"model": model, **{m: m for m in BASELINES}}
    psnr2, ssim2, n_held_out = _scores(volume, methods, name, progress)
    psnr4: dict[str, float] = {}
    coarse = volume[::2]  # the midpoints of gaps of 4: every other slice of volume[::2] held out
    if volume.shape[0] >= MIN_TREND_SLICES and float(np.min(coarse)) != float(np.max(coarse)):
        psnr4, _, _ = _scores(coarse, methods, name, progress)
    return SelfCheck(name, model.name, n_held_out, psnr2, ssim2, psnr4, choose(psnr2, psnr4))


@dataclass
class AutoMethod:
    """``--method auto``: per volume, the model or a classical method, whichever :func:`self_check` chooses.

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

    def resolve(self, volume: np.ndarray) -> str | ModelInterpolator:
        """Run the self-check on ``volume``, record and report it, and return the method to use."""
        check = self_check(volume, self.model, f"volume {len(self.checks) + 1}", progress=self.progress)
        self.checks.append(check)
        (self.report or (lambda text: print(text, file=sys.stderr)))(check.message())
        return self.model if check.choice == "model" else check.choice


def judge_self_checks(rows: Sequence[dict], auto: AutoMethod) -> list[dict]:
    """Was each self-check's choice right? Pairs the checks ``auto`` ran during one :func:`evaluate_volume`
    (one per factor, in the rows' order) with the true scores of the model and the classical methods in ``rows``.

    Returns one dict per factor (:data:`JUDGEMENT_FIELDS`): the choice, the truly best method (``best``; a
    classical method wins a tie with the model), ``right`` (the choice is within 0.1 dB of the best),
    ``cost_db`` (best minus chosen, true PSNR), and the model's margin over the best classical method on
    the check (at twice the spacing) and in truth.
    """
    scores = {(r["method"], r["factor"]): r["psnr_8bit"] for r in rows if r["position"] == "all"}
    factors = sorted({r["factor"] for r in rows})
    recent = auto.checks[-len(factors):] if len(auto.checks) >= len(factors) else []
    out = []
    for f, check in zip(factors, recent):
        true = {m: scores.get((m, f), math.nan) for m in BASELINES}
        true["model"] = scores.get((auto.model.name, f), math.nan)
        if any(math.isnan(v) for v in true.values()):
            continue
        best = max(true, key=lambda m: (true[m], m != "model"))
        cost = 0.0 if true[check.choice] >= true[best] else true[best] - true[check.choice]  # (inf - inf: none)
        classical = max(true[m] for m in BASELINES)
        out.append({"stack": next(r["stack"] for r in rows), "factor": f, "model": auto.model.name,
                    "choice": check.choice, "best": best, "right": bool(cost <= 0.1),
                    "cost_db": cost, "check_margin_db": check.margin,
                    "true_margin_db": true["model"] - classical, "n_held_out": check.n_held_out})
    return out
