"""What test-time augmentation (``zaugnet predict --tta``) buys: a model with and without it, the paper's protocol.

Each stack (default: the real stacks of ``../shared/data`` the shipped models never saw, as in
``benchmarks/models.py``) is scored at 2x with the model, the model with ``tta=True`` (the mean over the 8
rotations / mirror images and z reversal), both under ``--method auto`` (the self-check's mix, what ``zaugnet
predict`` and ``zaugnet predict --tta`` do) and the three classical methods; the table gives each one's PSNR gain
over the best classical method (8-bit scale) and its texture ratio. Writes ``tta.md`` and ``tta.csv``.

    python benchmarks/tta.py [--model bioimageio_models/zaugnet_plus] [--stacks FILE ...] [-o benchmarks/results]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
from zaugnet.export.load import load_interpolator

from zaugnet.atomic import atomic_write_text
from zaugnet.evaluate.selfcheck import AutoMethod
from zaugnet.evaluate.protocol import evaluate_stack
from zaugnet.io.tiff import read_stack
from zaugnet.predict.baselines import BASELINES
from zaugnet.tables import write_csv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import default_stacks  # noqa: E402  (the benchmark's stacks, one definition)

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    """Score, print the table, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="bioimageio_models/zaugnet_plus",
                        help="what zaugnet predict --model takes (a relative path also from the repository root)")
    parser.add_argument("--stacks", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    spec = args.model if Path(args.model).exists() else str(ROOT / args.model)
    model = load_interpolator(spec, name="model")
    tta = dataclasses.replace(model, tta=True)
    quiet = {"report": lambda text: None}
    methods = {**{m: m for m in BASELINES}, "model": model, "model --tta": tta, "auto": AutoMethod(model, **quiet),
               "auto --tta": AutoMethod(tta, **quiet)}
    rows = []
    for path in args.stacks or default_stacks():
        for _, ev in evaluate_stack(read_stack(path), methods, 2, positions_check=()):
            scores = {r["method"]: r for r in ev.rows if r["factor"] == 2 and r["position"] == "all"}
            best = max(BASELINES, key=lambda m: scores[m]["psnr_8bit"])
            row = {"stack": ev.stack, "best_classical": best}
            for m in ("model", "model --tta", "auto", "auto --tta"):
                row[f"{m}: gain_db"] = scores[m]["psnr_8bit"] - scores[best]["psnr_8bit"]
                row[f"{m}: texture"] = scores[m]["texture"]
            rows.append(row)
            print(row, file=sys.stderr)
    lines = ["| stack | best classical | model gain (dB) / texture | with --tta | --tta minus model (dB) | "
             "auto (the default) | auto with --tta |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['stack']} | {r['best_classical']} | {r['model: gain_db']:+.2f} / {r['model: texture']:.2f} | "
              f"{r['model --tta: gain_db']:+.2f} / {r['model --tta: texture']:.2f} | "
              f"{r['model --tta: gain_db'] - r['model: gain_db']:+.2f} | "
              f"{r['auto: gain_db']:+.2f} / {r['auto: texture']:.2f} | "
              f"{r['auto --tta: gain_db']:+.2f} / {r['auto --tta: texture']:.2f} |" for r in rows]
    delta = [r["model --tta: gain_db"] - r["model: gain_db"] for r in rows]
    lines += ["", f"Mean effect of --tta: {np.mean(delta):+.2f} dB (from {min(delta):+.2f} to {max(delta):+.2f})."]
    auto, auto_tta = ([r[f"{m}: gain_db"] for r in rows] for m in ("auto", "auto --tta"))
    lines += [f"Under --method auto: {np.mean(auto):+.2f} dB (worst {min(auto):+.2f}) without --tta, "
              f"{np.mean(auto_tta):+.2f} (worst {min(auto_tta):+.2f}) with it."]
    text = "\n".join(lines)
    print(text)
    args.output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output / "tta.md", f"# Test-time augmentation at 2x\n\n`python benchmarks/tta.py --model "
                                              f"{args.model}`; gains over the best classical method, 8-bit "
                                              f"scale.\n\n{text}\n")
    write_csv(rows, args.output / "tta.csv", list(rows[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
