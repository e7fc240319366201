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
from zaugnet.predict.baselines import BASELINES
from zaugnet.tables import write_csv

ROOT = Path(__file__).resolve().parents[1]
Scores = Mapping[str, float]
Rule = Callable[[Scores, Scores], Scores]


def _psnr(volume: np.ndarray, factor: int) -> dict[str, float]:
    ev = evaluate_volume(volume, {m: m for m in BASELINES}, factor, positions_check=())
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
    args = parser.parse_args(argv)
    rows = measure(volumes(args.data))
    text = report(rows)
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
