"""A self-check that needs no ground truth: how far to trust the model on this stack's own slices?

Before predicting, slices of the user's own volume are held out and predicted back from their
neighbours, by the model and by every classical method (linear, Keys cubic, cubic spline), and scored
with the paper's protocol (PSNR and SSIM on the volume's 8-bit scale), twice:

- at twice the volume's spacing: every other slice held out (the midpoints of gaps of 2 slices);
- at four times it: the midpoints of gaps of 4 slices (volumes of at least :data:`MIN_TREND_SLICES`).

``--method auto`` does not only pick one method: it mixes the model's new slices with those of the
classical method that scores best at twice the spacing, ``w * model + (1 - w) * classical``, with the
weight ``w`` (one of :data:`WEIGHTS`) that scores best on the held-out slices at twice the spacing. A
mix is kept only if it beats the classical method there by more than :data:`MODEL_MARGIN_DB` AND its
gain, extrapolated from 4x and 2x to the real spacing, stays above that too (else ``w = 0``: classical):
the new slices of a real run sit in gaps of ONE slice, finer than either check, and a model that wins at
twice the spacing but less and less as the spacing shrinks may lose at the real one. The extrapolation,
``gain_2x + TREND_WEIGHT * (gain_2x - gain_4x)`` with :data:`TREND_WEIGHT` 1/2 (the same weight at 4x),
lets the gain change again by half as much as from 4x to 2x. Without the trend (5 to 8 slices) the mix
needs :data:`UNSURE_MARGIN_DB` at twice the spacing and its weight is halved (:data:`UNSURE_SHRINK`):
less evidence, a smaller step away from the classical method. Below :data:`MIN_SLICES` slices, or on a
constant volume, nothing is checked and :data:`FALLBACK` is used.

Why a mix: the model's and the classical method's errors are partly independent, so a mix can beat both,
and a weight below 1 costs little where the model is right but bounds the loss where the check misjudges
it. Measured against choosing one method (the rule before the mix) on real stacks the models never saw and
on fine-z phantoms: ``docs/method.md``, "The self-check".

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
from ..predict.volume import Blend, mix_label
from .metrics import psnr, to_8bit
from .protocol import evaluate_volume

#: Fewest slices a volume needs for the self-check (two held-out slices at twice the spacing).
MIN_SLICES = 5
#: Fewest slices for the check at four times the spacing too (two held-out slices there), hence the trend.
MIN_TREND_SLICES = 9
#: The model's weights in the mix that the check tries (0: the classical method alone; 1: the model alone).
WEIGHTS: tuple[float, ...] = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 21))
#: How much better than the best classical method the mix must be (dB; at twice the spacing and extrapolated).
MODEL_MARGIN_DB = 0.2
#: How much of the gain's change from 4x to 2x the extrapolation to the real spacing adds again.
TREND_WEIGHT = 0.5
#: Without the trend: the gain needed at twice the spacing ...
UNSURE_MARGIN_DB = 0.1
#: ... and the factor on the weight found there.
UNSURE_SHRINK = 0.5
#: The method used where nothing can be checked.
FALLBACK = "linear"
#: Columns of :func:`judge_self_checks` rows (``selfcheck.csv``).
JUDGEMENT_FIELDS = ("stack", "factor", "model", "choice", "weight", "best", "right", "cost_db", "check_margin_db",
                    "true_margin_db", "n_held_out")


@dataclass(frozen=True)
class SelfCheck:
    """The outcome of :func:`self_check` on one volume.

    ``psnr2`` / ``ssim2``: method -> score at twice the spacing; ``psnr4``: method -> PSNR at four times
    (empty without the trend); ``mix2`` / ``mix4``: PSNR of each mix of :data:`WEIGHTS` (the model with the
    best classical method at that spacing; ``mix4`` empty without the trend); ``weight``: the model's weight in
    the output; ``choice``: ``"model"`` (weight 1), ``"mix"`` or a classical method's name (weight 0).
    """

    volume: str
    model: str
    n_held_out: int
    psnr2: Mapping[str, float]
    ssim2: Mapping[str, float]
    psnr4: Mapping[str, float]
    mix2: Sequence[float] = ()
    mix4: Sequence[float] = ()
    skipped: str = ""  # why nothing was checked (too few slices, constant volume)

    @property
    def weight(self) -> float:
        """The model's weight in the output (:func:`mix_weight`; 0 where nothing was checked)."""
        return mix_weight(self.mix2, self.mix4) if self.mix2 else 0.0

    @property
    def choice(self) -> str:
        """``"model"``, ``"mix"`` or the classical method used (the fallback where nothing was checked)."""
        return {1.0: "model", 0.0: self.best_classical}.get(self.weight, "mix")

    @property
    def best_classical(self) -> str:
        """The classical method that scored best at twice the spacing (the one mixed with the model)."""
        return max(BASELINES, key=lambda m: self.psnr2[m]) if self.psnr2 else FALLBACK

    @property
    def margin(self) -> float:
        """Model minus the best classical method at twice the spacing (dB, 8-bit scale); NaN if unchecked."""
        return self.psnr2.get("model", math.nan) - self.psnr2[self.best_classical] if self.psnr2 else math.nan

    @property
    def used(self) -> str:
        """What the output is made of, in words: the model's name, ``"0.75 <model> + 0.25 linear"`` or
        ``"linear interpolation"``."""
        w = self.weight
        return {1.0: self.model, 0.0: f"{self.choice} interpolation"}.get(
            w, mix_label(w, self.model, self.best_classical))

    def message(self) -> str:
        """One line for the user: the figures, the choice and why."""
        if self.n_held_out == 0:
            return f"self-check {self.volume}: {self.skipped}, nothing to check; using {FALLBACK} interpolation"
        names = {"model": self.model, **{m: m for m in BASELINES}}
        scores = ", ".join(f"{names[m]} {self.psnr2[m]:.2f}" + (f" / {self.psnr4[m]:.2f}" if self.psnr4 else "")
                           for m in names)
        where = "at twice / four times the spacing" if self.psnr4 else "at twice the spacing"
        best, i = self.best_classical, _best_index(self.mix2)
        trend = _trend(self.mix2, self.mix4, i)
        mix = (f"no mix with {self.model} beats {best} alone" if i == 0 else
               f"best mix {WEIGHTS[i]:.2f} {self.model} ({self.mix2[i] - self.mix2[0]:+.2f} dB at twice the spacing"
               + (f", {trend:+.2f} extrapolated to the real spacing)" if not math.isnan(trend) else ")"))
        return (f"self-check {self.volume}: held-out slices predicted {where} ({self.n_held_out} at twice; PSNR dB, "
                f"8-bit scale): {scores}; {self.model} {self.margin:+.2f} dB over {best}; {mix}; "
                f"using {self.used}")


def _scores(volume: np.ndarray, methods: Mapping[str, object], name: str, progress: bool,
            ) -> tuple[dict[str, float], dict[str, float], int, list[float]]:
    """PSNR and SSIM (8-bit scale) of each method on the midpoints of ``volume``'s gaps of 2, their count, and the
    PSNR of each mix of :data:`WEIGHTS` (the model with the best classical method)."""
    volume = np.asarray(volume)
    ev = evaluate_volume(volume, methods, 2, name=name, positions_check=(), progress=progress)
    rows = {r["method"]: r for r in ev.rows if r["factor"] == 2 and r["position"] == "all"}
    n = int(next(iter(rows.values()))["n_slices"])
    psnr2 = {m: float(r["psnr_8bit"]) for m, r in rows.items()}
    ssim2 = {m: float(r["ssim_8bit"]) for m, r in rows.items()}
    best = max(BASELINES, key=lambda m: psnr2[m])
    if "model" not in ev.predictions:  # the model could not predict: no mix
        return psnr2, ssim2, n, [psnr2[best]] + [math.nan] * (len(WEIGHTS) - 1)
    model, classical = ev.predictions["model"].astype(np.float64), ev.predictions[best].astype(np.float64)
    low, high = float(np.min(volume)), float(np.max(volume))
    held_out = range(1, len(model), 2)
    truth = [to_8bit(volume[z], low, high) for z in held_out]
    with np.errstate(divide="ignore"):  # an exact slice has PSNR inf
        mix = [float(np.mean([psnr(to_8bit(w * model[z] + (1 - w) * classical[z], low, high), t, 255.0)
                              for z, t in zip(held_out, truth)])) for w in WEIGHTS]
    return psnr2, ssim2, n, mix


def _best_index(mix: Sequence[float]) -> int:
    """Index of the best-scoring weight (the smallest on a tie; NaN scores never best)."""
    scores = np.nan_to_num(np.asarray(mix, np.float64), nan=-np.inf)
    return int(np.argmax(scores))


def _trend(mix2: Sequence[float], mix4: Sequence[float], i: int) -> float:
    """The gain of weight ``WEIGHTS[i]`` over the classical method, extrapolated to the real spacing from 4x and 2x
    (NaN without the trend, or without evidence from 4x: a NaN score, exact at both spacings)."""
    if not mix4:
        return math.nan
    with np.errstate(invalid="ignore"):
        gain2, gain4 = mix2[i] - mix2[0], mix4[i] - mix4[0]
        return float(gain2 + TREND_WEIGHT * (gain2 - gain4))


def mix_weight(mix2: Sequence[float], mix4: Sequence[float]) -> float:
    """The rule of ``--method auto`` (see the module's docstring): the model's weight in the output, from the check's
    PSNR of each mix of :data:`WEIGHTS` (``mix2[i]``: weight ``WEIGHTS[i]`` at twice the spacing, ``mix2[0]`` the
    best classical method alone, ``mix2[-1]`` the model alone; ``mix4`` the same at four times, empty without the
    trend). 0 means the classical method alone, 1 the model alone."""
    if mix2[-1] == math.inf and mix2[0] != math.inf:  # the model exact where no classical method is: the model
        return 1.0
    i = _best_index(mix2)
    gain2 = mix2[i] - mix2[0]
    if not gain2 > 0:  # the classical method alone is best (or NaN: inf - inf, both exact)
        return 0.0
    trend = _trend(mix2, mix4, i)
    if math.isnan(trend):
        return UNSURE_SHRINK * WEIGHTS[i] if gain2 > UNSURE_MARGIN_DB else 0.0
    return WEIGHTS[i] if min(gain2, trend) > MODEL_MARGIN_DB else 0.0


def self_check(volume: np.ndarray, model: ModelInterpolator, name: str = "volume", *,
               progress: bool = False) -> SelfCheck:
    """Score ``model``, every classical method and their mixes on held-out slices of ``volume`` (Z, Y, X).

    With ``progress``, a bar shows the model's held-out predictions.

    Returns
    -------
    SelfCheck
        ``weight`` is the model's weight in the output (:func:`mix_weight`), ``choice`` its name.
    """
    volume = np.asarray(volume)
    if volume.shape[0] < MIN_SLICES:
        skipped = f"{volume.shape[0]} slices, fewer than the {MIN_SLICES} the check needs"
        return SelfCheck(name, model.name, 0, {}, {}, {}, skipped=skipped)
    if float(np.min(volume)) == float(np.max(volume)):
        skipped = f"the volume is constant (every voxel {float(np.min(volume)):g})"
        return SelfCheck(name, model.name, 0, {}, {}, {}, skipped=skipped)
    methods: dict[str, object] = {"model": model, **{m: m for m in BASELINES}}
    psnr2, ssim2, n_held_out, mix2 = _scores(volume, methods, name, progress)
    psnr4: dict[str, float] = {}
    mix4: list[float] = []
    coarse = volume[::2]  # the midpoints of gaps of 4: every other slice of volume[::2] held out
    if volume.shape[0] >= MIN_TREND_SLICES and float(np.min(coarse)) != float(np.max(coarse)):
        psnr4, _, _, mix4 = _scores(coarse, methods, name, progress)
    return SelfCheck(name, model.name, n_held_out, psnr2, ssim2, psnr4, tuple(mix2), tuple(mix4))


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

    def resolve(self, volume: np.ndarray) -> str | ModelInterpolator | Blend:
        """Run the self-check on ``volume``, record and report it, and return the method to use."""
        check = self_check(volume, self.model, f"volume {len(self.checks) + 1}", progress=self.progress)
        self.checks.append(check)
        (self.report or (lambda text: print(text, file=sys.stderr)))(check.message())
        weight = check.weight
        if weight == 1.0:
            return self.model
        return check.best_classical if weight == 0.0 else Blend(self.model, check.best_classical, weight)


def judge_self_checks(rows: Sequence[dict], auto: AutoMethod) -> list[dict]:
    """Was each self-check's choice right? Pairs the checks ``auto`` ran during one :func:`evaluate_volume`
    (one per factor, in the rows' order) with the true scores of the model, the classical methods and ``auto``
    itself in ``rows`` (without ``auto``'s row, the method it chose stands for it; a mix cannot).

    Returns one dict per factor (:data:`JUDGEMENT_FIELDS`): the choice and the model's weight, the truly best
    single method (``best``; a classical method wins a tie with the model), ``right`` (the output is within
    0.1 dB of the best, or better), ``cost_db`` (best minus the output, true PSNR; 0 where the output is
    better), and the model's margin over the best classical method on the check (at twice the spacing) and in
    truth.
    """
    scores = {(r["method"], r["factor"]): r["psnr_8bit"] for r in rows if r["position"] == "all"}
    factors = sorted({r["factor"] for r in rows})
    recent = auto.checks[-len(factors):] if len(auto.checks) >= len(factors) else []
    out = []
    for f, check in zip(factors, recent):
        true = {m: scores.get((m, f), math.nan) for m in BASELINES}
        true["model"] = scores.get((auto.model.name, f), math.nan)
        chosen = scores.get((auto.name, f), true.get(check.choice, math.nan))
        if any(math.isnan(v) for v in (*true.values(), chosen)):
            continue
        best = max(true, key=lambda m: (true[m], m != "model"))
        cost = 0.0 if chosen >= true[best] else true[best] - chosen  # (inf - inf: none)
        classical = max(true[m] for m in BASELINES)
        out.append({"stack": next(r["stack"] for r in rows), "factor": f, "model": auto.model.name,
                    "choice": check.choice, "weight": check.weight, "best": best, "right": bool(cost <= 0.1),
                    "cost_db": cost, "check_margin_db": check.margin,
                    "true_margin_db": true["model"] - classical, "n_held_out": check.n_held_out})
    return out
