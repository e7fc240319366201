"""Can a check at coarser spacing tell which classical method wins at the real spacing? Rules measured.

The self-check of ``--method auto`` only sees the user's stack: it can hold slices out at twice and four
times the stack's spacing, never at the spacing of the new slices. This script measures, for every
classical method (linear, Keys cubic, cubic spline), how well candidate rules on those two checks pick the
method that is truly best at the real spacing, with the paper's protocol: each stack is reduced (every
f-th slice kept, f = 2 and 4), the rules see only the reduced stack, and the truth is the protocol's score
of each method predicting the dropped slices. Rules:

- ``at2x``: the best at twice the spacing (what ``--method auto`` uses);
- ``trend L``: the 2x margin over linear plus L times its change from 4x to 2x (L = 1: linear extrapolation
  to the real spacing);
- ``mse pP``: each method's MSE at 2x and 4x split into a constant (noise) and a part growing as spacing^P,
  extrapolated to spacing 1.

Stacks: every real stack in ``../shared/data`` (channel / time point 0) and, since those are mostly noisy
and coarsely sampled, simulated membrane and nuclei phantoms at fine z steps with and without noise,
where the spline wins. Writes ``selfcheck_rules.md`` and ``selfcheck_rules.csv``.

    python benchmarks/selfcheck_rules.py [--data ../shared/data] [-o benchmarks/results]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from zaugnet.atomic import atomic_write_text
from zaugnet.evaluate.protocol import evaluate_volume
from zaugnet.io.tiff import iter_volumes, read_stack
from zaugnet.phantoms import simulate_stack
from zaugnet.evaluate.selfcheck import MIN_TREND_SLICES
from zaugnet.predict.baselines import BASELINES
from zaugnet.tables import write_csv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import TRAINED_ON  # noqa: E402 - the benchmark's list of training stacks

ROOT = Path(__file__).resolve().parents[1]
Scores = Mapping[str, float]
Rule = Callable[[Scores, Scores], Scores]


def _psnr(volume: np.ndarray, factor: int, model: object | None = None) -> dict[str, float]:
    methods: dict[str, object] = {m: m for m in BASELINES}
    if model is not None:
        methods["model"] = model
    ev = evaluate_volume(volume, methods, factor, positions_check=())
    return {r["method"]: r["psnr_8bit"] for r in ev.rows if r["factor"] == factor and r["position"] == "all"}


def _trend(weight: float) -> Rule:
    def rule(c2: Scores, c4: Scores) -> Scores:
        return {m: (c2[m] - c2["linear"]) + weight * ((c2[m] - c2["linear"]) - (c4[m] - c4["linear"]))
                for m in BASELINES}
    return rule


def _mse(power: float) -> Rule:
    def rule(c2: Scores, c4: Scores) -> Scores:
        out = {}
        for m in BASELINES:
            e2, e4 = 10 ** (-c2[m] / 10), 10 ** (-c4[m] / 10)  # MSE / 255^2
            growing = max(0.0, (e4 - e2) / (4**power - 2**power))
            out[m] = -10 * math.log10(max(e2 - growing * 2**power, 0.0) + growing + 1e-30)
        return out
    return rule


ModelRule = Callable[[Scores, Scores], str]


def _model_rule(weight: float, margin: float, unsure: float = 0.5) -> ModelRule:
    """The model if its margin over the best classical method at 2x, and that margin plus ``weight`` times its
    change from 4x to 2x, both exceed ``margin`` (``unsure`` at 2x alone without the 4x check); else the best
    classical method at 2x. ``weight`` 0.5, ``margin`` 0.2: the single-method rule ``--method auto`` used before it
    mixed the model with the classical method (``zaugnet.evaluate.selfcheck.mix_weight``, which these PSNRs alone
    cannot evaluate: ``benchmarks/models.py --auto`` measures it)."""
    def rule(c2: Scores, c4: Scores) -> str:
        best = max(BASELINES, key=lambda m: c2[m])
        m2 = c2["model"] - c2[best]
        if not c4:
            return "model" if m2 > unsure else best
        m4 = c4["model"] - max(c4[m] for m in BASELINES)
        return "model" if min(m2, m2 + weight * (m2 - m4)) > margin else best
    return rule


MODEL_RULES: dict[str, ModelRule] = {"trend 1 / 0.2": _model_rule(1.0, 0.2),
                                     "trend 0.5 / 0.2": _model_rule(0.5, 0.2),
                                     "trend 0.25 / 0.2": _model_rule(0.25, 0.2), "2x / 0.2": _model_rule(0.0, 0.2),
                                     "2x / 0.5": _model_rule(0.0, 0.5), "trend 0.5 / 0.5": _model_rule(0.5, 0.5)}

RULES: dict[str, Rule] = {"at2x": lambda c2, c4: c2, "trend 0.25": _trend(0.25), "trend 0.5": _trend(0.5),
                          "trend 1": _trend(1.0), "mse p1": _mse(1), "mse p2": _mse(2), "mse p4": _mse(4)}


def volumes(data: Path) -> list[tuple[str, np.ndarray]]:
    """The real stacks in ``data`` (first volume of each) and the simulated fine-z phantoms."""
    out = [(p.name, np.asarray(next(iter_volumes(read_stack(p)))[1], np.float32)) for p in sorted(data.glob("*.tif"))]
    for kind in ("membrane", "nuclei"):
        for z_step in (0.2, 0.4):
            for noise in (False, True):
                name = f"phantom {kind} z {z_step} um{' noisy' if noise else ''}"
                out.append((name, simulate_stack((65, 96, 96), kind=kind, seed=5, z_step_um=z_step,
                                                 noise=noise).astype(np.float32)))
    return out


def measure(named: list[tuple[str, np.ndarray]]) -> list[dict]:
    """One row per (stack, factor): the true PSNR of each method, the best, and each rule's pick and cost."""
    rows = []
    for name, volume in named:
        for f in (2, 4):
            reduced = volume[:(len(volume) - 1) // f * f + 1][::f]
            if len(reduced) < 9:  # the 4x check needs two held-out slices
                continue
            true = _psnr(volume, f)
            c2, c4 = _psnr(reduced, 2), _psnr(reduced[::2], 2)
            best = max(BASELINES, key=lambda m: true[m])
            row: dict = {"stack": name, "factor": f, "best": best, **{f"psnr_{m}": true[m] for m in BASELINES}}
            for label, rule in RULES.items():
                predicted = rule(c2, c4)
                pick = max(BASELINES, key=lambda m: predicted[m])
                row[f"{label}: pick"], row[f"{label}: cost_db"] = pick, true[best] - true[pick]
            rows.append(row)
            print(f"{name} x{f}: best {best}, " + ", ".join(f"{label} {row[f'{label}: pick']} "
                                                            f"({row[f'{label}: cost_db']:.2f})" for label in RULES),
                  file=sys.stderr)
    return rows


def measure_model(named: list[tuple[str, np.ndarray]], model: object, skip: tuple[str, ...] = ()) -> list[dict]:
    """One row per (stack, factor) for the model's rules: the true PSNR of the model and each classical method,
    and each rule's choice and its gain over the truly best classical method (negative: a loss)."""
    rows = []
    for name, volume in named:
        if name in skip:
            continue
        true_all = {2: _psnr(volume, 2, model), 4: _psnr(volume, 4, model)}
        for f in (2, 4):
            reduced = volume[:(len(volume) - 1) // f * f + 1][::f]
            if len(reduced) < 5:  # the check needs two held-out slices at twice the spacing
                continue
            true = true_all[f]
            c2 = _psnr(reduced, 2, model)
            c4 = _psnr(reduced[::2], 2, model) if len(reduced) >= MIN_TREND_SLICES else {}
            classical = max(true[m] for m in BASELINES)
            row: dict = {"stack": name, "factor": f, "slices": len(reduced),
                         **{f"psnr_{m}": true[m] for m in (*BASELINES, "model")},
                         "model_gain_db": true["model"] - classical,
                         "check_margin_2x": c2["model"] - max(c2[m] for m in BASELINES),
                         "check_margin_4x": (c4["model"] - max(c4[m] for m in BASELINES)) if c4 else math.nan}
            for label, rule in MODEL_RULES.items():
                pick = rule(c2, c4)
                row[f"{label}: pick"], row[f"{label}: gain_db"] = pick, true[pick] - classical
            rows.append(row)
            print(f"{name} x{f}: model {row['model_gain_db']:+.2f}, " + ", ".join(
                f"{label} {row[f'{label}: pick']} ({row[f'{label}: gain_db']:+.2f})" for label in MODEL_RULES),
                file=sys.stderr)
    return rows


def report_model(rows: list[dict], label: str) -> str:
    """Markdown: per rule (choosing among ``label`` and the classical methods) the mean and worst gain over the
    best classical method, per factor, and the per-stack figures."""
    lines = [f"| rule ({label}) | factor | mean gain (dB) | worst (dB) | cases < -0.1 dB |", "|---|---|---|---|---|"]
    for rule in MODEL_RULES:
        for f in (2, 4):
            gains = np.array([r[f"{rule}: gain_db"] for r in rows if r["factor"] == f])
            lines.append(f"| {rule} | {f} | {gains.mean():+.3f} | {gains.min():+.2f} | {(gains < -0.1).sum()} of "
                         f"{len(gains)} |")
    lines += ["", "| stack | factor | slices | model gain | check margin 2x | 4x | " + " | ".join(MODEL_RULES) + " |",
              "|---|---|---|---|---|---|" + "---|" * len(MODEL_RULES)]
    lines += [f"| {r['stack']} | {r['factor']} | {r['slices']} | {r['model_gain_db']:+.2f} | "
              f"{r['check_margin_2x']:+.2f} | {r['check_margin_4x']:+.2f} | "
              + " | ".join(f"{r[f'{rule}: pick']} ({r[f'{rule}: gain_db']:+.2f})" for rule in MODEL_RULES) + " |"
              for r in rows]
    return "\n".join(lines)


def report(rows: list[dict]) -> str:
    """A markdown summary: per rule the mean and worst cost and how often it costs more than 0.1 dB."""
    lines = ["| rule | mean cost (dB) | worst (dB) | cases > 0.1 dB |", "|---|---|---|---|"]
    for label in RULES:
        costs = np.array([r[f"{label}: cost_db"] for r in rows])
        lines.append(f"| {label} | {costs.mean():.3f} | {costs.max():.2f} | {(costs > 0.1).sum()} of {len(costs)} |")
    lines += ["", "| stack | factor | linear | cubic | spline | best | at2x picks |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['stack']} | {r['factor']} | " + " | ".join(f"{r[f'psnr_{m}']:.2f}" for m in BASELINES)
              + f" | {r['best']} | {r['at2x: pick']} ({r['at2x: cost_db']:.2f}) |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, print the summary, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--model", metavar="NAME=SPEC", help="also measure rules choosing among this model "
                        "(checkpoint or package) and the classical methods, on every volume it was not trained on")
    parser.add_argument("--skip-classical", action="store_true", help="only the model's rules")
    args = parser.parse_args(argv)
    named = volumes(args.data)
    text = "" if args.skip_classical else report(rows := measure(named))
    if args.model:
        from zaugnet.export.load import load_interpolator

        label, _, spec = args.model.partition("=")
        model_rows = measure_model(named, load_interpolator(spec, name=label), skip=TRAINED_ON)
        model_text = report_model(model_rows, label)
        print(model_text)
        args.output.mkdir(parents=True, exist_ok=True)
        slug = label.replace("+", "_plus").replace("-", "_")
        atomic_write_text(args.output / f"selfcheck_rules_{slug}.md",
                          f"# Choosing between {label} and classical interpolation from checks at 2x and 4x\n\n"
                          f"`python benchmarks/selfcheck_rules.py --skip-classical --model {args.model}`; gain: true "
                          "PSNR of the rule's choice minus that of the best classical method (8-bit scale), at the "
                          f"real spacing; stacks {label} was trained on are left out.\n\n" + model_text + "\n")
        write_csv(model_rows, args.output / f"selfcheck_rules_{slug}.csv", list(model_rows[0]))
    if args.skip_classical:
        return 0
    print(text)
    args.output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output / "selfcheck_rules.md",
                      "# Choosing a classical method from checks at 2x and 4x the spacing\n\n"
                      "`python benchmarks/selfcheck_rules.py`; cost: true PSNR of the best classical method minus "
                      "that of the rule's pick (8-bit scale), at the real spacing.\n\n" + text + "\n")
    write_csv(rows, args.output / "selfcheck_rules.csv", list(rows[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
