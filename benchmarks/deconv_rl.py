"""Richardson-Lucy with our simulated widefield PSF on a real widefield / confocal pair, scored by the protocol.

``neubias_dna_conf_wf.tif`` (one Hoechst-stained nucleus, 45 x 130 x 133, 0.499 um z, 0.512 um xy, 40x/1.2 W):
channel 1 widefield is deconvolved, channel 0 confocal is the reference (``zaugnet.deconv.score``). The PSF is
``zaugnet.deconv.psf.widefield_psf`` (scalar pupil model, NA 1.2, emission 0.461 um, ni 1.333, ns 1.36, depth 0,
pixel-averaged), 2n - 1 planes x 65 x 65. Richardson-Lucy (``zaugnet.deconv.forward.richardson_lucy``, float32,
by FFT) runs on the widefield channel minus its 1st percentile, once per iteration count and boundary rule:

- ``reflect``: every convolution with the volume mirrored about its edges (our default);
- ``zeros``: every convolution with the volume 0 outside (scikit-image's rule);
- ``probe``: the note's probe: the stack mirrored by n // 2 slices and 16 px once, zero-padded convolutions on it,
  then cropped back.

Times are wall-clock seconds of each run on this machine with one torch thread (``--threads``). Writes
``deconv_rl.md``.

    OMP_NUM_THREADS=1 python benchmarks/deconv_rl.py [--data FILE] [--iterations 5 10 20 40] [-o benchmarks/results]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from zaugnet.atomic import atomic_write_text
from zaugnet.deconv.forward import richardson_lucy
from zaugnet.deconv.psf import widefield_psf
from zaugnet.deconv.score import Score, score_against_reference, subtract_background
from zaugnet.io.tiff import iter_volumes, read_stack

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "neubias_dna_conf_wf.tif"
OPTICS = {"na": 1.2, "wavelength": 0.461, "ni": 1.333, "ns": 1.36}
SCHEMES = ("reflect", "zeros", "probe")
#: The probe's numbers (shared/notes/ZS_DECONVNET.md; its own PSF, scikit-image's RL, 2 threads).
NOTE = {"raw widefield": (24.00, 0.772, 0.534, 0.424, "-"), "RL 5": (24.76, 0.823, 0.631, 0.836, "6 s"),
        "RL 10": (26.30, 0.852, 0.757, 0.901, "15 s"), "RL 20": (27.91, 0.893, 0.839, 0.930, "26 s"),
        "RL 40": (26.53, 0.871, 0.775, 0.831, "59 s")}


def deconvolve(observed: np.ndarray, psf: np.ndarray, iterations: int, scheme: str) -> np.ndarray:
    """Richardson-Lucy under one boundary rule (see the module docstring)."""
    if scheme != "probe":
        return richardson_lucy(observed, psf, iterations, padding=scheme)
    margin = (observed.shape[0] // 2, 16, 16)
    padded = np.pad(observed, [(m, m) for m in margin], mode="reflect")
    result = richardson_lucy(padded, psf, iterations, padding="zeros")
    return result[tuple(slice(m, m + n) for m, n in zip(margin, observed.shape))]


def row(method: str, score: Score, seconds: float | None) -> str:
    took = "-" if seconds is None else f"{seconds:.1f} s"
    return (f"| {method} | {score.psnr:.2f} | {score.ssim:.3f} | {score.pearson:.3f} | {score.z_profile:.3f} "
            f"| {took} |")


def main(argv: list[str] | None = None) -> int:
    """Simulate the PSF, deconvolve, score, print the table, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the widefield (c1) / confocal (c0) stack")
    parser.add_argument("--iterations", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--schemes", nargs="+", choices=SCHEMES, default=list(SCHEMES))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    volumes = dict(iter_volumes(read_stack(args.data)))
    confocal, widefield = volumes["c0"], volumes["c1"]
    n = widefield.shape[0]
    start = time.perf_counter()
    psf = widefield_psf((2 * n - 1, 65, 65), 0.499, 0.512, **OPTICS)
    psf_seconds = time.perf_counter() - start
    observed = subtract_background(widefield).astype(np.float32)

    lines = ["| method | PSNR (dB) | SSIM | r | z-profile r | time |", "| --- | --- | --- | --- | --- | --- |",
             row("raw widefield", score_against_reference(widefield, confocal), None)]
    print("\n".join(lines), flush=True)
    for scheme in args.schemes:
        for k in args.iterations:
            start = time.perf_counter()
            result = deconvolve(observed, psf, k, scheme)
            seconds = time.perf_counter() - start
            lines.append(row(f"RL {k}, {scheme}", score_against_reference(result, confocal), seconds))
            print(lines[-1], flush=True)

    note = ["| method | PSNR (dB) | SSIM | r | z-profile r | time, 2 cores |", "| --- | --- | --- | --- | --- | --- |"]
    note += [f"| {m} | {p:.2f} | {s:.3f} | {r:.3f} | {z:.3f} | {t} |" for m, (p, s, r, z, t) in NOTE.items()]
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    text = "\n".join([
        "# Richardson-Lucy on a real widefield / confocal pair",
        "",
        (f"`OMP_NUM_THREADS={threads} python benchmarks/deconv_rl.py` ({platform.machine()}, {os.cpu_count()} "
         f"cores, {args.threads} torch thread(s); the PSF took {psf_seconds:.1f} s). See the script's docstring "
         "for the set-up: `neubias_dna_conf_wf.tif`, channel 1 widefield scored against channel 0 confocal by "
         "`zaugnet.deconv.score` (1st percentile subtracted, reference normalised between its percentiles 0.1 "
         "and 99.9, least-squares fit `a * I + b`, PSNR / 3D SSIM on [0, 1], Pearson r, per-slice total r); "
         f"PSF `widefield_psf` NA 1.2, emission 0.461 um, ni 1.333, ns 1.36, {2 * n - 1} x 65 x 65."),
        "",
        *lines,
        "",
        ("The note's probe (its own scalar Gibson-Lanni PSF, scikit-image's Richardson-Lucy on the stack mirrored "
         "by n / 2 slices and 16 px; its PSNR clipped the reference only, ours clips both to [0, 1], hence 24.02 "
         "for its 24.00 on the raw row):"),
        "",
        *note,
        "",
    ])
    args.output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output / "deconv_rl.md", text)
    print(f"wrote {args.output / 'deconv_rl.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
