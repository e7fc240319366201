"""The ``zaugnet`` command line: one entry point, one subcommand per job.

Bad input (files, options, configuration) ends with one ``zaugnet: error: ...`` line naming the
file or field, exit status 2, and nothing written.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zaugnet.training import __version__
from zaugnet.training.errors import InputError

EXIT_INPUT_ERROR = 2


def _cmd_simulate(args: argparse.Namespace) -> None:
    from zaugnet.training.io import VoxelSize, write_stack
    from zaugnet.training.phantoms import simulate_stack

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise InputError(out, "exists; pass --overwrite to replace it")
    if min(args.shape) < 1 or args.shape[0] < 3:
        raise InputError("--shape", f"expected Z Y X with Z >= 3, got {args.shape}")
    data = simulate_stack(tuple(args.shape), kind=args.kind, seed=args.seed, z_step_um=args.z_step,
                          xy_step_um=args.xy_step, dtype=args.dtype, noise=not args.no_noise)
    write_stack(out, data, "ZYX", VoxelSize(z=args.z_step, y=args.xy_step, x=args.xy_step), overwrite=True)
    print(f"wrote {out} {data.shape} {data.dtype}, voxel size z={args.z_step} y=x={args.xy_step} um")


_RUN_FILES = ("checkpoints", "final.pt", "metrics.csv", "training_curves.png", "config.yaml")


def _train_config(args: argparse.Namespace) -> Any:
    from zaugnet.training.config import build_config, load_yaml, parse_override

    layers: list[dict[str, Any]] = []
    source = "config"
    if args.config:
        layers.append(load_yaml(args.config))
        source = str(args.config)
    flags: dict[str, Any] = {}
    if args.preset:
        flags["preset"] = args.preset
    if args.variant:
        flags.setdefault("net", {})["variant"] = args.variant
    for key, value in (("max_steps", args.max_steps), ("batch_size", args.batch_size), ("seed", args.seed),
                       ("device", args.device)):
        if value is not None:
            flags.setdefault("train", {})[key] = value
    if args.crop_size is not None:
        flags.setdefault("data", {})["crop_size"] = args.crop_size
    if args.axes is not None:
        flags.setdefault("data", {})["axes"] = args.axes
    layers.append(flags)
    layers += [parse_override(text) for text in args.set or []]
    return build_config(*layers, source=source)


def _cmd_train(args: argparse.Namespace) -> None:
    from zaugnet.training.trainer import Trainer, load_training_data

    config = _train_config(args)
    data = load_training_data(args.data, axes=config.data.axes)
    run_dir = Path(args.output)
    existing = [name for name in _RUN_FILES if (run_dir / name).exists()]
    if existing and not (args.resume or args.overwrite):
        raise InputError(run_dir, f"already holds a run ({', '.join(existing)}); pass --resume to continue it "
                                  "or --overwrite to start again")
    if args.resume and args.resume != "latest" and not Path(args.resume).is_file():
        raise InputError(args.resume, "--resume: checkpoint not found")
    trainer = Trainer(config, data, run_dir)
    resume = None
    if args.resume:
        resume = trainer.latest_checkpoint() if args.resume == "latest" else Path(args.resume)
        if resume is None:
            raise InputError(run_dir, "--resume: no checkpoint to resume from")
    elif existing and trainer.rank == 0:
        for name in existing:
            target = run_dir / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    n_val = len(trainer.val_triplets)
    if trainer.rank == 0:
        print(f"{len(data.volumes)} volume(s), {len(trainer.train_triplets)} training / {n_val} validation "
              f"triplets, {config.net.variant} ({config.preset}) on {trainer.device}", file=sys.stderr)
    final = trainer.fit(resume=resume, progress=not args.quiet)
    if trainer.rank == 0:
        last = trainer.history[-1] if trainer.history else {}
        summary = ", ".join(f"{k} {last[k]:.3f}" for k in ("val_psnr", "val_psnr_linear", "val_ssim") if k in last)
        print(f"wrote {final}" + (f" ({summary})" if summary else ""))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``zaugnet`` and its subcommands."""
    parser = argparse.ArgumentParser(prog="zaugnet", description="Self-supervised z-slice augmentation of 3D "
                                     "microscopy stacks (ZAugNet, ZAugNet+).")
    parser.add_argument("--version", action="version", version=f"zaugnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sim = sub.add_parser("simulate", help="write a synthetic phantom stack (ground truth at any z)")
    sim.add_argument("-o", "--output", required=True, help="output TIFF (.tif: ImageJ, .ome.tif: OME-TIFF)")
    sim.add_argument("--shape", type=int, nargs=3, default=[32, 128, 128], metavar=("Z", "Y", "X"))
    sim.add_argument("--kind", choices=["membrane", "nuclei"], default="membrane")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--z-step", type=float, default=0.5, help="slice spacing in um (default 0.5)")
    sim.add_argument("--xy-step", type=float, default=0.2, help="pixel size in um (default 0.2)")
    sim.add_argument("--dtype", choices=["uint8", "uint16", "float32"], default="uint16")
    sim.add_argument("--no-noise", action="store_true", help="blur only, no shot or read noise")
    sim.add_argument("--overwrite", action="store_true")
    sim.set_defaults(func=_cmd_simulate)

    tr = sub.add_parser("train", help="train a ZAugNet or ZAugNet+ model on high-resolution stacks")
    tr.add_argument("data", nargs="+", help="TIFF / OME-TIFF stacks or folders of them")
    tr.add_argument("-o", "--output", required=True, help="run directory (final checkpoint: RUN_DIR/final.pt)")
    tr.add_argument("--variant", choices=["zaugnet", "zaugnet+"])
    tr.add_argument("--preset", choices=["small", "paper"], help="network and training defaults (default paper)")
    tr.add_argument("--config", help="YAML file with config values (see config.yaml of any run)")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one value, e.g. train.lr=3e-4")
    tr.add_argument("--max-steps", type=int)
    tr.add_argument("--batch-size", type=int)
    tr.add_argument("--crop-size", type=int)
    tr.add_argument("--seed", type=int)
    tr.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    tr.add_argument("--axes", help="axes of inputs without metadata, e.g. TZYX or ZCYX")
    tr.add_argument("--resume", nargs="?", const="latest", help="continue from the latest checkpoint in RUN_DIR "
                    "(or the given one)")
    tr.add_argument("--overwrite", action="store_true", help="replace a previous run in RUN_DIR")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=_cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except InputError as err:
        print(f"zaugnet: error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("zaugnet: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
