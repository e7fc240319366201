"""The ``zaugnet`` command line: one entry point, one subcommand per job.

Bad input (files, options, configuration) ends with one ``zaugnet: error: ...`` line naming the
file or field, exit status 2, and nothing written. The whole request (options, output names and
folders) is checked before the model or the stack is read. SIGTERM (what job schedulers send) is
handled like Ctrl-C: temporary files are removed and the exit status is 143 (130 for Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from zaugnet import __version__
from zaugnet.errors import InputError

EXIT_INPUT_ERROR = 2
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143
#: Weight formats of a package ``--weight-format`` may choose (as ``zaugnet.export.load.WEIGHT_FORMATS``).
WEIGHT_FORMATS = ("pytorch_state_dict", "onnx", "torchscript")
#: Classical methods (as ``zaugnet.predict.baselines.BASELINES``; named here so ``--help`` needs no numpy).
CLASSICAL = ("linear", "cubic", "spline")
TIFF_OUTPUTS = (".tif", ".tiff")
FIGURE_SUFFIXES = (".png",)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``zaugnet: error: ...``, exit 2), like every other refusal."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INPUT_ERROR, f"zaugnet: error: {self.prog}: {message} (see {self.prog} --help)\n")


def _finite(text: str) -> float:
    """An argparse type: a finite float (``nan`` and ``inf`` are refused where they are parsed)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _check_output(path: Path, *, overwrite: bool, suffixes: Sequence[str] = (), folder: bool = False) -> None:
    """Refuse an output before any work: wrong kind of name, exists, or a parent that cannot hold it.

    Missing parent folders are created when the output is written.
    """
    name = path.name.lower()
    if suffixes and not name.endswith(tuple(suffixes)):
        raise InputError(path, f"unsupported output; the name must end with {' or '.join(suffixes)}")
    if path.exists():
        if not overwrite:
            raise InputError(path, "exists; pass --overwrite to replace it")
        if folder != path.is_dir() and not name.endswith(".zarr"):
            raise InputError(path, "is a folder" if path.is_dir() else "is a file, not a folder")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(path, f"cannot be written: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(path, f"cannot be written: no permission to write in {parent}")


def _cmd_simulate(args: argparse.Namespace) -> None:
    from zaugnet.io.tiff import VoxelSize, write_stack
    from zaugnet.phantoms import simulate_stack

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise InputError(out, "exists; pass --overwrite to replace it")
    if min(args.shape) < 1 or args.shape[0] < 3:
        raise InputError("--shape", f"expected Z Y X with Z >= 3, got {args.shape}")
    data = simulate_stack(tuple(args.shape), kind=args.kind, seed=args.seed, z_step_um=args.z_step,
                          xy_step_um=args.xy_step, dtype=args.dtype, noise=not args.no_noise)
    write_stack(out, data, "ZYX", VoxelSize(z=args.z_step, y=args.xy_step, x=args.xy_step), overwrite=True)
    print(f"wrote {out} {data.shape} {data.dtype}, voxel size z={args.z_step} y=x={args.xy_step} um")


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
    from zaugnet.training import runs
    from zaugnet.training.trainer import Trainer, load_training_data

    config = _train_config(args)
    data = load_training_data(args.data, axes=config.data.axes)
    run_dir = Path(args.output)
    existing = runs.existing(run_dir)
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
        runs.clear(run_dir)
    n_val = len(trainer.val_triplets)
    if trainer.rank == 0:
        print(f"{len(data.volumes)} volume(s), {len(trainer.train_triplets)} training / {n_val} validation "
              f"triplets, {config.net.variant} ({config.preset}) on {trainer.device}"
              f"{' (bfloat16 autocast)' if trainer.amp else ''}, {trainer.world} process(es)", file=sys.stderr)
    final = trainer.fit(resume=resume, progress=not args.quiet)
    if trainer.rank == 0:
        last = trainer.history[-1] if trainer.history else {}
        summary = ", ".join(f"{k} {last[k]:.3f}" for k in ("val_psnr", "val_psnr_linear", "val_ssim") if k in last)
        print(f"wrote {final}" + (f" ({summary})" if summary else ""))


def _input_z(text: str | None) -> list[float] | None:
    """``--input-z``: a file with one z coordinate per line (or comma/space separated), or a comma-separated list."""
    if text is None:
        return None
    path = Path(text)
    try:
        raw = path.read_text(encoding="utf-8") if path.is_file() else text
        values = [float(v) for v in raw.replace(",", " ").split()]
    except (ValueError, UnicodeDecodeError):
        raise InputError(text, "--input-z: expected numbers (one z coordinate per input slice)") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise InputError(text, "--input-z: expected finite numbers (one z coordinate per input slice)")
    return values


def _check_predict_request(args: argparse.Namespace, src: Path, out: Path, large: bool, method_name: str) -> None:
    """Everything about a predict request that can be checked without reading the stack or the model."""
    if not src.exists():
        raise InputError(src, "no such file")
    if out.resolve() == src.resolve():
        raise InputError(out, "is the input file; choose another output (inputs are never overwritten)")
    _check_output(out, overwrite=args.overwrite, suffixes=(*TIFF_OUTPUTS, ".zarr"))
    if large and out.suffix != ".zarr":
        raise InputError(out, "an OME-Zarr input is written as OME-Zarr: give an output ending in .zarr")
    if method_name in CLASSICAL and args.model is not None:
        raise InputError("--model/--method", f"--method {method_name} uses no model; leave out --model")
    if method_name in CLASSICAL and args.weight_format:
        raise InputError("--weight-format", f"--method {method_name} uses no model; leave out --weight-format")
    if method_name == "auto" and large:
        raise InputError("--method auto", "the self-check needs the whole stack in memory; give --method model "
                                          "or --method cubic for OME-Zarr")
    if args.restart and not large:
        raise InputError("--restart", "applies to OME-Zarr (.zarr) outputs, which can be resumed")
    if args.chunk is not None and not large:
        raise InputError("--chunk", "applies to OME-Zarr (.zarr) outputs, computed block by block; use --tile for "
                                    "the model's tiles")
    if args.figure:
        if large:
            raise InputError("--figure", "is drawn for TIFF outputs only (the whole result in memory)")
        figure = Path(args.figure)
        if figure.resolve() in (src.resolve(), out.resolve()):
            raise InputError(figure, "--figure must differ from the input and the output")
        _check_output(figure, overwrite=args.overwrite, suffixes=FIGURE_SUFFIXES)
    if method_name in ("model", "auto"):
        _device(args.device)


def _cmd_predict(args: argparse.Namespace) -> None:
    from zaugnet.io.tiff import read_stack, write_stack
    from zaugnet.predict.plan import make_plan, midpoint_passes
    from zaugnet.predict.volume import augment_stack

    src, out = Path(args.input), Path(args.output)
    large = out.suffix == ".zarr" or src.suffix == ".zarr"
    method_name = args.method or ("model" if large else "auto")
    _check_predict_request(args, src, out, large, method_name)
    method: Any = method_name
    if method_name in ("model", "auto"):
        from zaugnet.export.load import default_model

        spec = args.model or default_model()
        method = _load_model(spec, device=_device(args.device), batch_size=args.batch_size, tile=args.tile,
                             halo=args.halo, tta=args.tta, weight_format=args.weight_format)
        if not args.model:
            print(f"model: {spec} (the shipped default; choose another with --model)", file=sys.stderr)
        # a midpoint-only model and a factor it cannot serve: refused before the stack is read
        probe = make_plan(2, None, factor=args.factor, z_positions=args.z_positions)
        if args.target_spacing is None:
            midpoint_passes(probe.positions, method, probe.option)
    if large:  # out of core: OME-Zarr (or a memory-mapped TIFF) in, OME-Zarr out, block by block with dask
        from zaugnet.io.omezarr import open_large
        from zaugnet.predict.outofcore import predict_large

        if out.suffix != ".zarr":
            raise InputError(out, "an OME-Zarr input is written as OME-Zarr: give an output ending in .zarr")
        info = open_large(src, args.axes)
        n_z, z_spacing, unit = info.n_z, info.voxel_size.z, info.voxel_size.unit
    else:
        stack = read_stack(src, axes=args.axes, min_slices=2)
        n_z, z_spacing, unit = stack.data.shape[stack.axes.index("Z")], stack.voxel_size.z, stack.voxel_size.unit
    plan = make_plan(n_z, z_spacing, factor=args.factor, z_positions=args.z_positions,
                     target_spacing=args.target_spacing, input_z=_input_z(args.input_z))
    if not isinstance(method, str):
        midpoint_passes(plan.positions, method, plan.option)
        if method_name == "auto":
            from zaugnet.evaluate.selfcheck import AutoMethod

            method = AutoMethod(method, progress=not args.quiet)
            if not args.quiet:
                print(f"self-check: slices of each volume held out and predicted back by {method.model.name} and "
                      "by linear, cubic and spline interpolation", file=sys.stderr)
    if large:
        predict_large(src, out, plan, method, chunk_yx=args.chunk or 512, num_workers=args.workers,
                      progress=not args.quiet, overwrite=args.overwrite, restart=args.restart, axes=args.axes)
        dtype = "OME-Zarr"
    else:
        _check_memory(stack, len(plan.positions), out)
        result = augment_stack(stack, plan, method, progress=not args.quiet)
        with _committed_together(Path(args.figure) if args.figure else None) as figure:
            if figure is not None:  # drawn first: a figure that fails leaves no output behind
                _augmentation_figure(stack, result, method, figure)
            write_stack(out, result, overwrite=args.overwrite)
        dtype = str(result.data.dtype)
        if args.figure:
            print(f"wrote {args.figure}")
    if plan.note:
        print(f"note: {plan.note}", file=sys.stderr)
    z = f", z voxel size {plan.z_spacing:g} {unit}" if plan.z_spacing else ", no z voxel size in the input"
    print(f"wrote {out}: {n_z} -> {len(plan.positions)} slices ({dtype}{z})")


def _check_memory(stack: Any, n_out: int, out: Path) -> None:
    """Refuse a TIFF output that cannot fit in memory (it is built whole before it is written)."""
    from zaugnet.io.tiff import available_memory

    z_axis = stack.axes.index("Z")
    per_slice = stack.data.nbytes // max(1, stack.data.shape[z_axis])
    # the output in its dtype, plus one volume's float32 slices while it is computed
    need = n_out * per_slice + n_out * (per_slice // stack.data.itemsize) * 4 // max(1, _volumes(stack))
    free = available_memory()
    if need > free:
        raise InputError(out, f"the result would take {need / 1e9:.1f} GB, more than the {free / 1e9:.1f} GB of "
                              "memory available; write an OME-Zarr output (-o OUT.zarr), which is built block by "
                              "block")


def _volumes(stack: Any) -> int:
    """Time points x channels of a stack."""
    return int(math.prod(n for axis, n in zip(stack.axes, stack.data.shape) if axis in "TC"))


@contextlib.contextmanager
def _committed_together(figure: Path | None) -> Iterator[Path | None]:
    """A temporary path for ``figure``, renamed into place only if the whole block succeeds."""
    if figure is None:
        yield None
        return
    from zaugnet.atomic import atomic_path

    with atomic_path(figure) as tmp:
        yield tmp


def _augmentation_figure(before: Any, after: Any, method: Any, path: Path) -> None:
    """``--figure``: orthogonal views of the first volume before and after, titled with the method used."""
    from zaugnet.evaluate.selfcheck import AutoMethod
    from zaugnet.figures import plot_z_augmentation
    from zaugnet.io.tiff import iter_volumes

    (label, vol_in), (_, vol_out) = next(iter_volumes(before)), next(iter_volumes(after))
    used = method if isinstance(method, str) else method.name
    if isinstance(method, AutoMethod):
        first = method.checks[0]
        used += f" -> {first.used} (self-check {first.margin:+.2f} dB)"
    name = f"{before.path.name if before.path else 'stack'}{f' [{label}]' if label else ''}"
    vs_in, vs_out = before.voxel_size, after.voxel_size
    plot_z_augmentation(vol_in, vol_out, vs_in.z, vs_out.z, (vs_in.y, vs_in.x), path,
                        unit=vs_in.unit if vs_in.x else "px",
                        title=f"{name}: {len(vol_in)} -> {len(vol_out)} slices, {used}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from zaugnet.evaluate.selfcheck import AutoMethod
    from zaugnet.io.tiff import find_stacks, read_stack

    out = Path(args.output)
    _check_output(out, overwrite=True, folder=True)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise InputError(out, "is not empty; pass --overwrite to write into it")
    if "auto" in args.methods and not args.model:
        raise InputError("--methods auto", "needs a model to check (--model)")
    if args.weight_format and not args.model:
        raise InputError("--weight-format", "applies to --model; no model given")
    if args.model:
        _device(args.device)
    paths = find_stacks(args.stacks)
    stacks = [read_stack(p, axes=args.axes) for p in paths]  # validate every input before any work
    methods: dict[str, object] = {m: m for m in args.methods if m != "auto"}
    if "auto" in args.methods:  # the self-check is judged against every classical method it chooses among
        methods.update({m: m for m in CLASSICAL if m not in methods})
    device = _device(args.device)
    autos: list[AutoMethod] = []
    for spec in args.model or []:
        model = _load_model(spec, device=device, weight_format=args.weight_format)
        name = model.name if model.name not in methods else f"{model.name}:{Path(spec).parent.name}"
        model.name = name
        methods[name] = model
        if "auto" in args.methods:
            autos.append(AutoMethod(model, report=lambda text: None))
            methods[autos[-1].name] = autos[-1]
    extractor = None
    if args.fid_weights:
        from zaugnet.evaluate.fid import InceptionFeatures

        extractor = InceptionFeatures(args.fid_weights, device=device)
    with _staged_folder(out) as stage:
        text = _evaluate_into(stage, args, stacks, methods, autos, extractor)
    print(text)
    print(f"\nwrote {out / 'metrics.csv'} and figures in {out}")


def _evaluate_into(out: Path, args: argparse.Namespace, stacks: list, methods: dict[str, object], autos: list,
                   extractor: Any) -> str:
    """Score ``methods`` on ``stacks``; write metrics and figures into the folder ``out``; return the table."""
    import numpy as np

    from zaugnet.atomic import atomic_write_text
    from zaugnet.evaluate.metrics import to_8bit
    from zaugnet.evaluate.protocol import (
        FIELDS,
        evaluate_stack,
        format_table,
        summarize,
    )
    from zaugnet.evaluate.selfcheck import JUDGEMENT_FIELDS, judge_self_checks
    from zaugnet.figures import plot_orthogonal_views, plot_per_slice_psnr
    from zaugnet.tables import write_csv

    rows, real8, fake8 = [], [], {m: [] for m in methods}
    checks: list[dict] = []
    for stack in stacks:
        for volume, ev in evaluate_stack(stack, methods, args.factor):
            rows += ev.rows
            for auto in autos:
                checks += judge_self_checks(ev.rows, auto)
            slug = ev.stack.replace("/", "_").replace("[", "_").replace("]", "")
            n = len(next(iter(ev.predictions.values())))
            truth = volume[:n].astype(np.float32)
            plot_orthogonal_views(truth, ev.predictions, stack.voxel_size, out / f"{slug}_orthoviews.png")
            plot_per_slice_psnr(ev.per_slice, out / f"{slug}_psnr_per_slice.png")
            if extractor is not None:
                lo, hi = float(truth.min()), float(truth.max())
                real8.append(to_8bit(truth[1::2], lo, hi))
                for m, pred in ev.predictions.items():
                    fake8[m].append(to_8bit(pred[1::2], lo, hi))
    table = rows + summarize(rows)
    write_csv(table, out / "metrics.csv", FIELDS)
    text = format_table(table)
    if extractor is not None:
        from zaugnet.evaluate.fid import fid

        real = np.concatenate(real8)
        lines = ["method,fid_factor2"] + [f"{m},{fid(real, np.concatenate(f), extractor, value_range=(0, 255)):.4f}"
                                          for m, f in fake8.items()]
        atomic_write_text(out / "fid.csv", "\n".join(lines) + "\n")
        text += "\n\nFID (factor 2, all stacks):\n" + "\n".join(lines[1:])
    else:
        text += ("\n\nFID not computed: pass --fid-weights FILE, a local Inception-v3 TorchScript file "
                 "(e.g. inception-2015-12-05.pt); it cannot be downloaded here.")
    if checks:
        write_csv(checks, out / "selfcheck.csv", JUDGEMENT_FIELDS)
        right = sum(c["right"] for c in checks)
        text += (f"\n\nself-check (--method auto) came within 0.1 dB of the truly best of the model, linear, "
                 f"cubic and spline (or above it) in {right} of {len(checks)} cases")
        text += "".join(f"\n  {c['stack']} x{c['factor']}: chose {c['choice']} (model weight {c['weight']:.2f}), "
                        f"best {c['best']} (cost {c['cost_db']:.2f} dB); model over the best classical "
                        f"{c['check_margin_db']:+.2f} dB on the check, {c['true_margin_db']:+.2f} dB in truth"
                        for c in checks)
    return text


@contextlib.contextmanager
def _staged_folder(out: Path) -> Iterator[Path]:
    """A hidden temporary folder beside ``out``; its files move into ``out`` only if the block succeeds."""
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.zaugnet-tmp-{os.getpid()}-", dir=out.parent) as tmp:
        yield Path(tmp)
        out.mkdir(exist_ok=True)
        for item in sorted(Path(tmp).iterdir()):
            os.replace(item, out / item.name)


def _quiet_bioimageio() -> None:
    """bioimageio.core logs every step at INFO level; keep its warnings and errors only."""
    try:
        from loguru import logger
    except ImportError:  # pragma: no cover - installed with bioimageio.core
        return
    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def _load_model(spec: str, **options: Any) -> Any:
    """``--model``: a checkpoint, a BioImage.IO package (zip or folder), a URL or a model-zoo id."""
    from zaugnet.export import load_interpolator

    _quiet_bioimageio()
    return load_interpolator(spec, **options)


def _cmd_export(args: argparse.Namespace) -> None:
    """``zaugnet export``: a ZAugNet or ZS-DeconvNet checkpoint (its ``kind``) -> a tested BioImage.IO package."""
    from zaugnet.export import export_model
    from zaugnet.export.deconv import export_deconv_model, is_deconv_checkpoint
    from zaugnet.io.tiff import iter_volumes, read_stack

    sample = None
    if args.sample and not Path(args.sample).is_file():
        raise InputError(args.sample, "no such file")
    if args.sample:
        _, sample = next(iter_volumes(read_stack(args.sample, axes=args.axes)))
    documentation = None
    if args.documentation:
        try:
            documentation = Path(args.documentation).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(args.documentation, f"cannot read it as text ({err.__class__.__name__})") from None
    if not Path(args.checkpoint).is_file():
        raise InputError(args.checkpoint, "checkpoint not found")
    _check_output(Path(args.output), overwrite=args.overwrite, folder=not args.output.lower().endswith(".zip"))
    _quiet_bioimageio()
    export = export_deconv_model if is_deconv_checkpoint(args.checkpoint) else export_model
    path = export(args.checkpoint, args.output, sample=sample, name=args.name, documentation=documentation,
                  figures=args.figure or (), overwrite=args.overwrite)
    print(f"wrote {path} (bioimageio.core test passed)")


def _device(spec: str) -> str:
    """``--device``: auto, cpu, cuda or cuda:N, checked against what this machine has."""
    from zaugnet.devices import pick_device

    return pick_device(spec)


def _subcommand(sub: Any, name: str, summary: str, description: str, examples: str) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` has a description and examples."""
    import textwrap

    text = f"{summary}.\n\n" + textwrap.fill(description, 100)
    return sub.add_parser(name, help=summary, description=text,
                          epilog="examples:\n" + examples, formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_threads(command: argparse.ArgumentParser) -> None:
    command.add_argument("--threads", type=int, help="CPU threads for the network (default: the cores this "
                         f"process may use, here {_cores()}); on a busy shared machine fewer can be much faster")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``zaugnet`` and its subcommands."""
    parser = _Parser(prog="zaugnet", description="Self-supervised z-slice augmentation of 3D "
                     "microscopy stacks (ZAugNet, ZAugNet+, ZAugNet-C). Start with: zaugnet predict "
                     "my_stack.tif -o my_stack_x2.tif --figure views.png")
    parser.add_argument("--version", action="version", version=f"zaugnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sim = _subcommand(sub, "simulate", "write a synthetic phantom stack (ground truth at any z)",
                      "Membranes or nuclei, blurred by an anisotropic PSF, with shot and read noise; for trying "
                      "things out and for tests.",
                      "  zaugnet simulate -o phantom.tif --shape 32 128 128 --kind nuclei --z-step 0.6\n")
    sim.add_argument("-o", "--output", required=True, help="output TIFF (.tif: ImageJ, .ome.tif: OME-TIFF)")
    sim.add_argument("--shape", type=int, nargs=3, default=[32, 128, 128], metavar=("Z", "Y", "X"),
                     help="stack size in slices and pixels (default 32 128 128; Z >= 3)")
    sim.add_argument("--kind", choices=["membrane", "nuclei"], default="membrane",
                     help="what the phantom shows (default membrane)")
    sim.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same stack "
                     "(default 0)")
    sim.add_argument("--z-step", type=float, default=0.5, help="slice spacing in um (default 0.5)")
    sim.add_argument("--xy-step", type=float, default=0.2, help="pixel size in um (default 0.2)")
    sim.add_argument("--dtype", choices=["uint8", "uint16", "float32"], default="uint16",
                     help="pixel type of the file (default uint16)")
    sim.add_argument("--no-noise", action="store_true", help="blur only, no shot or read noise")
    sim.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    sim.set_defaults(func=_cmd_simulate)

    tr = _subcommand(sub, "train", "train a ZAugNet, ZAugNet+ or ZAugNet-C model on high-resolution stacks",
                     "Self-supervised: triplets of slices (n1, n2, n3) of your own stacks teach the network to "
                     "predict n2 from n1 and n3. The run folder gets checkpoints, metrics.csv, training curves "
                     "and the validated config.yaml. The paper preset is the published 10 M-parameter network "
                     "(a GPU network); on a CPU use --preset small.",
                     "  zaugnet train stacks/ -o runs/a --preset small --max-steps 2000\n"
                     "  zaugnet train stacks/ -o runs/b --variant zaugnet+ --preset paper --device cuda\n"
                     "  zaugnet train stacks/ -o runs/b --resume\n")
    tr.add_argument("data", nargs="+", help="TIFF / OME-TIFF stacks or folders of them")
    tr.add_argument("-o", "--output", required=True, help="run directory (final checkpoint: RUN_DIR/final.pt)")
    tr.add_argument("--variant", choices=["zaugnet", "zaugnet+", "zaugnet-c"],
                    help="zaugnet (midpoints), zaugnet+ (any z, DPM), zaugnet-c (context: K slices around each "
                    "gap, cubic + learned correction, any z) (default zaugnet)")
    tr.add_argument("--preset", choices=["small", "paper"], help="network and training defaults (default paper: "
                    "the published 10 M-parameter network, meant for a GPU; small trains on a CPU)")
    tr.add_argument("--config", help="YAML file with config values (see config.yaml of any run)")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one value, e.g. train.lr=3e-4")
    tr.add_argument("--max-steps", type=int, help="training steps (default: the preset's)")
    tr.add_argument("--batch-size", type=int, help="samples per step and process (default: the preset's)")
    tr.add_argument("--crop-size", type=int, help="square training crop in pixels (default: the preset's)")
    tr.add_argument("--seed", type=int, help="random seed of weights and batches (default: the config's)")
    tr.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    tr.add_argument("--axes", help="axes of inputs without metadata, e.g. TZYX or ZCYX")
    tr.add_argument("--resume", nargs="?", const="latest", help="continue from the latest checkpoint in RUN_DIR "
                    "(or the given one)")
    tr.add_argument("--overwrite", action="store_true", help="replace a previous run in RUN_DIR")
    _add_threads(tr)
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=_cmd_train)

    pr = _subcommand(sub, "predict", "z-augment a stack with a model or a classical interpolation",
                     "By default the number of slices is doubled (n -> 2n - 1) after a self-check on your "
                     "stack's own slices: the shipped ZAugNet+ is used only where it clearly beats linear, "
                     "cubic and spline interpolation there, else the best of those. Original slices are copied bit "
                     "for "
                     "bit; dtype, intensities and voxel size (with the new z spacing) are kept.",
                     "  zaugnet predict my_stack.tif -o my_stack_x2.tif --figure views.png\n"
                     "  zaugnet predict my_stack.tif -o my_stack_x3.tif --model bioimageio_models/zaugnet_plus "
                     "--factor 3\n"
                     "  zaugnet predict big.ome.zarr -o big_x2.zarr --method model\n")
    pr.add_argument("input", help="TIFF / OME-TIFF stack (3D, 4D t-z-y-x, or multichannel z-c-y-x), or an "
                    "OME-Zarr (with an output ending in .zarr)")
    pr.add_argument("-o", "--output", required=True, help="output TIFF (.tif: ImageJ, .ome.tif: OME-TIFF), or "
                    ".zarr for OME-Zarr written out of core block by block (resumable); missing folders are "
                    "created")
    pr.add_argument("--model", help="trained model: a checkpoint (RUN_DIR/final.pt), a BioImage.IO package "
                    "(zip or folder), a URL to one, or a model-zoo id (default: the shipped ZAugNet+)")
    pr.add_argument("--method", choices=["auto", "model", *CLASSICAL],
                    help="auto (default for TIFF): per volume, the model or the best classical method, whichever "
                    "predicts the volume's own held-out slices better (the model only when clearly better; "
                    "reported); model: always the model (default for OME-Zarr); linear, cubic (Keys), spline "
                    "(not-a-knot cubic spline along z): classical axial interpolation")
    pr.add_argument("--factor", type=int, help="new slices per gap + 1 (default 2; ZAugNet: 2, 4, 8, ...)")
    pr.add_argument("--z-positions", type=_finite, nargs="+", metavar="Z",
                    help="relative positions in (0, 1) of the new slices in every gap (ZAugNet+, ZAugNet-C)")
    pr.add_argument("--target-spacing", type=_finite, help="output z spacing (same unit as the voxel size)")
    pr.add_argument("--input-z", help="z coordinates of the input slices (file or comma-separated list), for "
                    "non-uniform spacing with --target-spacing")
    pr.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    pr.add_argument("--weight-format", choices=WEIGHT_FORMATS, help="which weights of a BioImage.IO package to "
                    "run (default: pytorch_state_dict into zaugnet's own network, else onnx; neither runs code "
                    "from the package). torchscript RUNS THE PACKAGE'S CODE (TorchScript is a program): choose "
                    "it only for packages you trust")
    pr.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass, at most (default 4), "
                    "batched only up to 512 x 512 pixels a pass: larger tiles run one at a time, which is faster")
    pr.add_argument("--tta", action="store_true", help="test-time augmentation: average the model over the 8 "
                    "rotations / mirror images and z reversal (16x the model's time; the shipped ZAugNet+ at 2x on "
                    "five real stacks: -0.04 to +0.16 dB PSNR, and smoother new slices; benchmarks/tta.py)")
    pr.add_argument("--tile", type=int, default=1024, help="side of the model's tiles in pixels, a multiple of 16 "
                    "(default 1024: slices up to 1280 px, tile plus halo, are predicted whole); larger slices are "
                    "predicted tile by tile (out of core each --chunk block, with its halo, is one tile)")
    pr.add_argument("--halo", type=int, default=128, help="context the model sees around each tile (and, out of "
                    "core, around each block) in pixels (default 128)")
    pr.add_argument("--chunk", type=int, help="OME-Zarr output: side in pixels of the XY blocks computed one at a "
                    "time and of the output chunks, a multiple of 16 (default 512)")
    pr.add_argument("--axes", help="axes of inputs without metadata, e.g. TZYX or ZCYX")
    pr.add_argument("--workers", type=int, help="OME-Zarr output: dask worker threads (default: automatic); "
                    "they share --threads")
    _add_threads(pr)
    pr.add_argument("--figure", help="also write a PNG of orthogonal views (XZ, YZ) before and after")
    pr.add_argument("--overwrite", action="store_true", help="replace an existing output (and discard a partial "
                    "OME-Zarr output)")
    pr.add_argument("--restart", action="store_true", help="OME-Zarr output: discard a partial output left by an "
                    "interrupted run and start again (by default a run resumes it)")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=_cmd_predict)

    ev = _subcommand(sub, "evaluate", "the paper's protocol: drop slices of high-resolution stacks, predict "
                     "them back, score RMSE / PSNR / SSIM (8-bit scale and native units)",
                     "Writes metrics.csv, orthogonal views and per-slice PSNR figures into the output folder "
                     "(all at the end, so a failure leaves nothing).",
                     "  zaugnet evaluate stack.tif -o results/ --model bioimageio_models/zaugnet --methods "
                     "linear cubic auto --factor 4\n")
    ev.add_argument("stacks", nargs="+", help="high-resolution TIFF stacks or folders of them (ground truth)")
    ev.add_argument("-o", "--output", required=True, help="folder for metrics.csv and figures")
    ev.add_argument("--model", action="append", help="a trained model to score: checkpoint, package, URL or "
                    "zoo id (repeatable)")
    ev.add_argument("--methods", nargs="*", choices=[*CLASSICAL, "auto"], default=list(CLASSICAL),
                    help="classical baselines to score beside the models (default: linear cubic spline); auto also "
                    "scores each model under --method auto (its self-check runs on the reduced stack)")
    ev.add_argument("--factor", type=int, default=2, help="also score this factor (a power of two for ZAugNet; "
                    "factor 2 is always scored)")
    ev.add_argument("--weight-format", choices=WEIGHT_FORMATS, help="which weights of a package --model runs "
                    "(as for predict; torchscript runs the package's code)")
    ev.add_argument("--fid-weights", help="local Inception-v3 TorchScript file for FID (optional)")
    ev.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    ev.add_argument("--axes", help="axes of inputs without metadata, e.g. TZYX or ZCYX")
    _add_threads(ev)
    ev.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    ev.set_defaults(func=_cmd_evaluate)

    ex = _subcommand(sub, "export", "package a trained model for BioImage.IO, deepImageJ and the model zoo",
                     "TorchScript, ONNX and a state dict, checked against each other and with bioimageio.core's "
                     "test before anything is written. A ZS-DeconvNet checkpoint (zaugnet deconv train) becomes a "
                     "3D deconvolution package (TorchScript and ONNX; input raw, outputs denoised and deconvolved, "
                     "its fixed intensity affine as pre- and post-processing).",
                     "  zaugnet export runs/a/final.pt -o zaugnet_model.zip --sample stack.tif\n"
                     "  zaugnet export runs/a/final.pt -o models/zaugnet   # a folder, as deepImageJ takes it\n"
                     "  zaugnet export runs/deconv/final.pt -o models/zs_deconvnet --sample nucleus_c1.tif\n")
    ex.add_argument("checkpoint", help="training checkpoint, e.g. RUN_DIR/final.pt (zaugnet train or "
                    "zaugnet deconv train)")
    ex.add_argument("-o", "--output", required=True, help="PACKAGE.zip, or a folder")
    ex.add_argument("--sample", help="a stack whose middle slices become the test/sample tensors and cover "
                    "(ZS-DeconvNet: its first volume, centre-cropped to 16 x 96 x 96; default: a simulated phantom)")
    ex.add_argument("--name", help="model name in the package")
    ex.add_argument("--documentation", help="a markdown file appended to the package's Validation section "
                    "(e.g. benchmarks/results/accuracy.md)")
    ex.add_argument("--figure", action="append", help="a PNG or JPEG image attached to the package and shown in "
                    "its documentation (repeatable)")
    ex.add_argument("--axes", help="axes of a --sample without metadata")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing package")
    ex.set_defaults(func=_cmd_export)
    _add_psf_commands(sub)
    _add_deconv_commands(sub)
    return parser


# --- zaugnet psf: point spread functions for deconvolution (zaugnet.deconv.psf) -----------------------------


def _cmd_psf_simulate(args: argparse.Namespace) -> None:
    from zaugnet.deconv.psf import confocal_psf, widefield_psf
    from zaugnet.io.tiff import VoxelSize, write_stack

    out = Path(args.output)
    _check_output(out, overwrite=args.overwrite, suffixes=TIFF_OUTPUTS)
    if args.excitation is not None and not args.confocal:
        raise InputError("--excitation", "applies to confocal PSFs only; add --confocal")
    if args.confocal and args.excitation is None:
        raise InputError("--confocal", "needs --excitation (the excitation wavelength in um)")
    optics = {"na": args.na, "wavelength": args.wavelength, "ni": args.ni, "ns": args.ns, "depth": args.depth}
    try:  # every parameter is checked before any work
        if args.confocal:
            psf = confocal_psf(args.shape, args.dz, args.dxy, excitation=args.excitation, **optics)
        else:
            psf = widefield_psf(args.shape, args.dz, args.dxy, **optics)
    except InputError as err:  # the model names its parameters as these options, without the dashes
        raise InputError(f"--{err.where}", err.problem) from None
    write_stack(out, psf, "ZYX", VoxelSize(z=args.dz, y=args.dxy, x=args.dxy), overwrite=args.overwrite)
    kind = "confocal" if args.confocal else "widefield"
    print(f"wrote {out}: {kind} PSF {' x '.join(map(str, psf.shape))} float32 (sum 1), voxel size "
          f"z={args.dz:g} y=x={args.dxy:g} um")


def _add_psf_commands(sub: Any) -> None:
    """``zaugnet psf ACTION``: point spread functions for deconvolution."""
    group = _subcommand(sub, "psf", "point spread functions for deconvolution",
                        "Simulated from the optics (a scalar pupil model); for Richardson-Lucy and zero-shot "
                        "deconvolution.",
                        "  zaugnet psf simulate --na 1.2 --wavelength 0.461 --ni 1.333 --dz 0.499 --dxy 0.512 "
                        "-o psf.tif\n")
    actions = group.add_subparsers(dest="psf_command", required=True, metavar="ACTION",
                                   help="simulate: write a PSF computed from the objective and media")
    sim = _subcommand(actions, "simulate", "write a simulated widefield or confocal PSF as a float32 TIFF",
                      "Scalar diffraction through a circular pupil, plane by plane, with the Gibson-Lanni path "
                      "difference (immersion and coverslip as designed; at --depth 0 plain defocus, and --ns "
                      "has no effect). Widefield: averaged over each camera pixel; confocal: excitation x "
                      "emission PSF, pinhole infinitely small, sampled at the scan positions. Odd sizes, "
                      "centred on the brightest voxel, sum 1, the voxel size stored in the file.",
                      "  zaugnet psf simulate --na 1.2 --wavelength 0.461 --ni 1.333 --ns 1.36 --dz 0.499 "
                      "--dxy 0.512 --shape 33 65 65 -o psf.tif\n"
                      "  zaugnet psf simulate --na 1.4 --wavelength 0.52 --ni 1.518 --dz 0.2 --dxy 0.1 "
                      "--confocal --excitation 0.488 -o confocal_psf.tif\n")
    sim.add_argument("-o", "--output", required=True, help="output TIFF (.tif: ImageJ, .ome.tif: OME-TIFF)")
    sim.add_argument("--na", type=_finite, required=True, help="numerical aperture of the objective (below --ni)")
    sim.add_argument("--wavelength", type=_finite, required=True, help="emission wavelength in um, e.g. 0.461")
    sim.add_argument("--ni", type=_finite, required=True, help="refractive index of the immersion medium "
                     "(water 1.333, glycerol 1.47, oil 1.518)")
    sim.add_argument("--ns", type=_finite, help="refractive index of the sample (default: --ni); matters only "
                     "with --depth")
    sim.add_argument("--depth", type=_finite, default=0.0, help="depth of the imaged plane below the coverslip "
                     "in um: the spherical aberration of an --ns different from --ni (default 0: none)")
    sim.add_argument("--dz", type=_finite, required=True, help="plane spacing in um")
    sim.add_argument("--dxy", type=_finite, required=True, help="pixel size in um")
    sim.add_argument("--shape", type=int, nargs=3, default=[33, 65, 65], metavar=("Z", "Y", "X"),
                     help="planes, rows and columns, each odd (default 33 65 65; at most 257 1025 1025)")
    sim.add_argument("--confocal", action="store_true", help="a confocal PSF (needs --excitation)")
    sim.add_argument("--excitation", type=_finite, help="excitation wavelength in um (with --confocal)")
    sim.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    sim.set_defaults(func=_cmd_psf_simulate)


# --- zaugnet deconv: zero-shot 3D deconvolution (ZS-DeconvNet; zaugnet.training.deconv, zaugnet.deconv) -----


def _deconv_optics(args: argparse.Namespace) -> dict[str, float]:
    """The pupil-model options given (``--na`` ...), all three of NA, wavelength and ni or none of them."""
    names = ("na", "wavelength", "ni", "ns", "depth", "excitation")
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if args.psf and given:
        raise InputError("--psf", f"give either a PSF file or the optics to simulate one (--{', --'.join(given)}), "
                                  "not both")
    missing = [f"--{n}" for n in ("na", "wavelength", "ni") if n not in given]
    if given and missing:
        raise InputError(missing[0], f"simulating a PSF needs --na, --wavelength and --ni ({', '.join(missing)} "
                                     "missing)")
    if args.psf and not Path(args.psf).is_file():
        raise InputError(args.psf, "--psf: no such file")
    return given


def _deconv_train_config(args: argparse.Namespace) -> Any:
    from zaugnet.training.config import load_yaml, parse_override
    from zaugnet.training.deconv.config import build_deconv_config

    layers: list[dict[str, Any]] = []
    source = "config"
    if args.config:
        layers.append(load_yaml(args.config))
        source = str(args.config)
    optics = _deconv_optics(args)
    if not (args.psf or optics or args.config):
        raise InputError("--psf", "give a PSF file (--psf psf.tif) or the optics to simulate one (--na, "
                                  "--wavelength, --ni)")
    flags: dict[str, Any] = {"preset": args.preset} if args.preset else {}
    psf: dict[str, Any] = dict(optics)
    for key, value in (("path", args.psf), ("volume", args.psf_volume), ("background", args.psf_background)):
        if value is not None:
            psf[key] = value
    if psf:
        flags["psf"] = psf
    for key, value in (("channel", args.channel), ("axes", args.axes), ("voxel_size", args.voxel_size)):
        if value is not None:
            flags.setdefault("data", {})[key] = value
    for key, value in (("max_steps", args.max_steps), ("batch_size", args.batch_size), ("seed", args.seed),
                       ("device", args.device)):
        if value is not None:
            flags.setdefault("train", {})[key] = value
    layers.append(flags)
    layers += [parse_override(text) for text in args.set or []]
    return build_deconv_config(*layers, source=source)


def _cmd_deconv_train(args: argparse.Namespace) -> None:
    from zaugnet.training import runs

    config = _deconv_train_config(args)
    run_dir = Path(args.output)
    _check_output(run_dir, overwrite=True, folder=True)
    existing = runs.existing(run_dir)
    if existing and not (args.resume or args.overwrite):
        raise InputError(run_dir, f"already holds a run ({', '.join(existing)}); pass --resume to continue it "
                                  "or --overwrite to start again")
    if args.resume and args.overwrite:
        raise InputError("--resume", "and --overwrite exclude each other")
    if args.resume and args.resume != "latest" and not Path(args.resume).is_file():
        raise InputError(args.resume, "--resume: checkpoint not found")
    _device(config.train.device)
    from zaugnet.training.deconv.data import (
        describe_psf,
        load_training_volumes,
        training_psf,
    )
    from zaugnet.training.deconv.trainer import DeconvTrainer

    data = load_training_volumes(args.stacks, config.data)
    psf = training_psf(config.psf, config.data.patch, data.voxel_size)
    trainer = DeconvTrainer(config, data, psf, run_dir)
    resume = None
    if args.resume:
        resume = trainer.latest_checkpoint() if args.resume == "latest" else Path(args.resume)
        if resume is None:
            raise InputError(run_dir, "--resume: no checkpoint to resume from")
    elif existing:
        runs.clear(run_dir)
    print(f"{len(data.volumes)} volume(s) ({', '.join(data.names)}), voxel z {data.voxel_size[0]:g} xy "
          f"{data.voxel_size[1]:g} um; {describe_psf(config, psf, data.voxel_size)}; ZS-DeconvNet "
          f"({config.preset}) on {trainer.device}", file=sys.stderr)
    final = trainer.fit(resume=resume, progress=not args.quiet)
    last = trainer.history[-1] if trainer.history else {}
    summary = ", ".join(f"{k} {last[k]:.4f}" for k in ("loss", "val_loss") if k in last)
    print(f"wrote {final}" + (f" (step {trainer.step}: {summary})" if summary else ""))


def _denoised_path(out: Path) -> Path:
    """``OUT.tif`` -> ``OUT_denoised.tif`` (``.ome.tif`` kept)."""
    name = out.name
    suffix = next(s for s in (".ome.tiff", ".ome.tif", ".tiff", ".tif") if name.lower().endswith(s))
    return out.with_name(f"{name[:-len(suffix)]}_denoised{name[-len(suffix):]}")


def _zyx(option: str, values: Sequence[int] | None, low: int) -> tuple[int, int, int] | None:
    if values is not None and min(values) < low:
        raise InputError(option, f"expected three integers Z Y X, each at least {low}, got {list(values)}")
    return tuple(values) if values is not None else None  # type: ignore[return-value]


def _deconv_method(args: argparse.Namespace) -> str:
    """The --method asked for: auto by default (the self-check, with --model or a PSF), else as given."""
    return args.method or "auto"


def _check_deconv_predict(args: argparse.Namespace, src: Path, out: Path) -> Path | None:
    """Everything about a deconv predict request checkable without reading the stack or the model; returns the
    denoised output's path (None when no model runs)."""
    if not src.exists():
        raise InputError(src, "no such file")
    if out.resolve() == src.resolve():
        raise InputError(out, "is the input file; choose another output (inputs are never overwritten)")
    _check_output(out, overwrite=args.overwrite, suffixes=TIFF_OUTPUTS)
    method = _deconv_method(args)
    model_only = {"--model": args.model, "--tile": args.tile, "--halo": args.halo}
    psf_options = {"--psf": args.psf, "--na": args.na, "--wavelength": args.wavelength, "--ni": args.ni,
                   "--ns": args.ns, "--depth": args.depth, "--psf-volume": args.psf_volume,
                   "--psf-background": args.psf_background}
    if method == "model":
        wrong = {"--iterations": args.iterations, "--padding": args.padding, **psf_options}
        others = "rl or auto"
    elif method == "rl":
        wrong, others = model_only, "model or auto"
    elif args.model:  # auto with a model: the RL candidates use the model's PSF
        wrong = {"--iterations": args.iterations, **psf_options}
        others = "rl (auto with --model uses the model's PSF and picks the iteration count)"
    else:  # auto without a model: Richardson-Lucy, the self-check picking the count
        wrong = {"--iterations": args.iterations, "--tile": args.tile, "--halo": args.halo}
        others = "rl or model (auto picks the iteration count)"
    given = [k for k, v in wrong.items() if v is not None]
    if given:
        raise InputError(given[0], f"applies to --method {others}, not --method {method}")
    _zyx("--tile", args.tile, 1)
    _zyx("--halo", args.halo, 0)
    if args.iterations is not None and not 1 <= args.iterations <= 10_000:
        raise InputError("--iterations", f"must be between 1 and 10000, got {args.iterations}")
    if method == "rl" or (method == "auto" and not args.model):
        if not (args.psf or _deconv_optics(args)):
            if method == "auto":
                raise InputError("--model", "give a trained model (--model RUN_DIR/final.pt of zaugnet deconv "
                                            "train), or a PSF for Richardson-Lucy (--psf, or --na, --wavelength, "
                                            "--ni)")
            raise InputError("--psf", "--method rl needs a PSF file (--psf) or the optics to simulate one "
                                      "(--na, --wavelength, --ni)")
        return None
    if not args.model:
        raise InputError("--model", "--method model needs a trained model (RUN_DIR/final.pt of zaugnet deconv train)")
    if not Path(args.model).is_file():
        raise InputError(args.model, "checkpoint not found")
    _device(args.device)
    denoised = _denoised_path(out)
    if denoised.resolve() == src.resolve():
        raise InputError(denoised, "(the denoised output) is the input file; choose another output")
    _check_output(denoised, overwrite=args.overwrite, suffixes=TIFF_OUTPUTS)
    return denoised


def _deconv_psf(source: dict[str, Any], shape: Sequence[int], dz: float, dxy: float, prefix: str,
                crop_file: bool = False) -> Any:
    """The PSF at ``dz`` / ``dxy`` from a PSF file (``path``, ``volume``, ``background``; cropped to ``shape`` if
    ``crop_file``) or the optics (``na``, ``wavelength``, ``ni``, ``ns``, ``depth``, ``excitation``: confocal) at
    ``shape``; errors of the optics name ``prefix`` + the option (``--na``, ``psf.na``)."""
    from zaugnet.deconv.psf import confocal_psf, read_bead_psf, widefield_psf

    if source.get("path"):
        return read_bead_psf(source["path"], dz, dxy, shape if crop_file else None,
                             background=source.get("background"), volume=source.get("volume"))
    optics = {"na": source["na"], "wavelength": source["wavelength"], "ni": source["ni"], "ns": source.get("ns"),
              "depth": source.get("depth") or 0.0}
    try:
        if source.get("excitation") is not None:
            return confocal_psf(shape, dz, dxy, excitation=source["excitation"], **optics)
        return widefield_psf(shape, dz, dxy, **optics)
    except InputError as err:
        raise InputError(f"{prefix}{err.where}", err.problem) from None


def _deconv_auto(args: argparse.Namespace, model: Any, model_method: Any, check_method: Any, volume: Any,
                 voxel: tuple[float, float] | None, src: Path) -> tuple[Any, Any]:
    """--method auto: the self-check (zaugnet.deconv.selfcheck; the model as ``check_method``, on odd slices) on
    ``volume``, its one-line table printed; returns the chosen method (the model as ``model_method``, on the whole
    stack) and, for Richardson-Lucy, its PSF at the stack's spacing (None for the model)."""
    from zaugnet.deconv.predict import Affine, RLDeconvolver, rl_psf_shape
    from zaugnet.deconv.selfcheck import Candidate, rl_candidates, self_check

    padding = args.padding or "zeros"
    if model is not None:
        from zaugnet.training.deconv.checkpoint import load_deconv_checkpoint
        from zaugnet.training.deconv.data import held_out_slices, training_psf

        config = model.config
        source: dict[str, Any] = config.psf.model_dump()
        prefix = "psf."
        voxel = voxel or model.voxel_size
        if all(abs(a / b - 1) < 0.05 for a, b in zip(voxel, model.voxel_size)):
            check_psf = load_deconv_checkpoint(args.model)[1]["psf"].numpy()  # the loss's PSF, as trained
        else:
            check_psf = training_psf(config.psf, config.data.patch, voxel)
        affine, reblur = model.affine, config.psf.padding
        held_out = held_out_slices(volume.shape[0], config.data.val_fraction)
        candidates = [Candidate("model", check_method, aligned=True), *rl_candidates(check_psf, padding=padding)]
    else:
        if voxel is None:
            raise InputError(src, "has no voxel size (z and xy in a length unit); Richardson-Lucy needs it for "
                                  "the PSF")
        source = {"path": args.psf, "volume": args.psf_volume, "background": args.psf_background, **_deconv_optics(args)}
        prefix = "--"
        half = (volume.shape[0] // 2, *volume.shape[1:])
        check_psf = _deconv_psf(source, rl_psf_shape(half), 2 * voxel[0], voxel[1], prefix)
        affine, reblur, held_out = Affine.from_volumes([volume], where=str(src)), "reflect", 0
        candidates = rl_candidates(check_psf, padding=padding)
    try:
        check = self_check(volume, candidates, check_psf, affine, padding=reblur, held_out=held_out,
                           model="model" if model is not None else None, trained_on=held_out == 0)
    except ValueError as err:
        raise InputError(src, f"too few slices for the self-check ({err}); choose --method model or rl") from None
    print(check.table())
    if check.choice == "model":
        return model_method, None
    chosen = next(c for c in candidates if c.name == check.choice)
    # the PSF checked, at the stack's spacing: the same extent in z (twice the planes), the same in y and x
    shape = (min(2 * check_psf.shape[0] - 1, 257), *check_psf.shape[1:])
    psf = _deconv_psf(source, shape, voxel[0], voxel[1], prefix, crop_file=True)
    return RLDeconvolver(psf, chosen.iterations or 20, padding=padding), psf


def _cmd_deconv_predict(args: argparse.Namespace) -> None:
    from zaugnet.deconv.predict import (
        ModelDeconvolver,
        ParitySplit,
        RLDeconvolver,
        deconvolve_stack,
        rl_psf_shape,
        select_volumes,
    )
    from zaugnet.io.tiff import available_memory, read_stack, write_stack
    from zaugnet.io.units import size_in_um

    src, out = Path(args.input), Path(args.output)
    denoised_out = _check_deconv_predict(args, src, out)
    how = _deconv_method(args)
    method: Any
    model = model_method = check_method = psf = None
    if args.model:
        from zaugnet.training.deconv.checkpoint import load_deconv_network

        device = _device(args.device)
        model = load_deconv_network(args.model, device=device)
        radius, grid = model.receptive_radius, model.multiple
        # the whole stack: odd and even slices apart (ParitySplit), each at the spacing the model trained at
        model_method = ModelDeconvolver(ParitySplit(model.network), model.affine, tile=_zyx("--tile", args.tile, 1),
                                        halo=args.halo or (2 * radius, radius, radius), device=device,
                                        align=(2, grid, grid),
                                        max_voxels=max(1, available_memory() // 2 // model.bytes_per_voxel),
                                        progress=not args.quiet)
        # the self-check: the odd slices alone, as in training
        check_method = dataclasses.replace(model_method, network=model.network, halo=(radius,) * 3,
                                           align=(1, grid, grid), progress=False)
    stack = read_stack(src, axes=args.axes, min_slices=2)
    picked = select_volumes(stack, args.channel, str(src))
    size, factor = stack.voxel_size, size_in_um(stack.voxel_size.unit)
    voxel = None
    if size.z is not None and size.x is not None and factor is not None:
        voxel = (size.z * factor, size.x * factor)
    if how == "rl":
        if voxel is None:
            raise InputError(src, "has no voxel size (z and xy in a length unit); --method rl needs it for the PSF")
        source = {"path": args.psf, "volume": args.psf_volume, "background": args.psf_background,
                  **_deconv_optics(args)}
        psf = _deconv_psf(source, rl_psf_shape(picked[0][1].shape), voxel[0], voxel[1], "--")
        method = RLDeconvolver(psf, args.iterations or 20, padding=args.padding or "zeros")
    elif how == "auto":  # the self-check on the first volume chooses for all of them
        method, psf = _deconv_auto(args, model, model_method, check_method, picked[0][1], voxel, src)
    else:
        method = model_method
    if model is not None and voxel is not None and \
            not all(abs(a / b - 1) < 0.05 for a, b in zip(voxel, model.voxel_size)):
        print(f"note: the stack's voxel size (z {voxel[0]:g}, xy {voxel[1]:g} um) differs from the one the model was "
              f"trained on (z {model.voxel_size[0]:g}, xy {model.voxel_size[1]:g} um)", file=sys.stderr)
    denoised, deconvolved = deconvolve_stack(stack, method, args.channel, progress=not args.quiet)
    with _committed_together(denoised_out if denoised is not None else None) as tmp:
        if tmp is not None:
            write_stack(tmp, denoised, overwrite=True)
        write_stack(out, deconvolved, overwrite=args.overwrite)
    if method is model_method:
        what = f"ZS-DeconvNet ({Path(args.model).name}, step {model.step})"  # type: ignore[union-attr]
    else:
        what = (f"Richardson-Lucy, {method.iterations} iterations, {method.padding} padding, PSF "
                f"{' x '.join(map(str, psf.shape))}")  # type: ignore[union-attr]
    shape = " x ".join(map(str, deconvolved.data.shape))
    print(f"wrote {out}" + (f" and {denoised_out}" if denoised is not None else "") +
          f": {what}; {deconvolved.axes} {shape} float32, voxel size kept")


def _add_deconv_optics(command: argparse.ArgumentParser, purpose: str) -> None:
    command.add_argument("--psf", help=f"PSF {purpose}: a TIFF of beads or of a simulated PSF (zaugnet psf simulate) "
                         "with its voxel size; resampled to the voxel size needed")
    command.add_argument("--psf-volume", help="channel / time point of a multi-volume --psf file, e.g. c0")
    command.add_argument("--psf-background", type=_finite, help="value subtracted from --psf (default: its median, "
                         "right for beads; give 0 for a simulated PSF)")
    command.add_argument("--na", type=_finite, help="simulate a widefield PSF instead: numerical aperture")
    command.add_argument("--wavelength", type=_finite, help="simulate: emission wavelength in um, e.g. 0.461")
    command.add_argument("--ni", type=_finite, help="simulate: immersion refractive index (water 1.333, oil 1.518)")
    command.add_argument("--ns", type=_finite, help="simulate: sample refractive index (default: --ni)")
    command.add_argument("--depth", type=_finite, help="simulate: depth below the coverslip in um (default 0)")


def _add_deconv_commands(sub: Any) -> None:
    """``zaugnet deconv ACTION``: zero-shot deconvolution (ZS-DeconvNet, 3D) and Richardson-Lucy."""
    group = _subcommand(sub, "deconv", "zero-shot 3D deconvolution: train ZS-DeconvNet on a stack, or deconvolve",
                        "ZS-DeconvNet (Qiao et al. 2024) learns to denoise and deconvolve from the stack itself: its "
                        "odd slices are the input, its even slices the target, and a PSF re-blurs the result in the "
                        "loss. Richardson-Lucy is the classical baseline.",
                        "  zaugnet deconv train nucleus.tif --channel c1 -o runs/deconv --na 1.2 --wavelength "
                        "0.461 --ni 1.333 --preset small\n"
                        "  zaugnet deconv predict nucleus.tif --channel c1 -o nucleus_deconv.tif --model "
                        "runs/deconv/final.pt\n")
    actions = group.add_subparsers(dest="deconv_command", required=True, metavar="ACTION",
                                   help="train: a ZS-DeconvNet on your stack; predict: deconvolve a stack")
    tr = _subcommand(actions, "train", "train a two-stage 3D ZS-DeconvNet (denoiser + deconvolver) on a stack",
                     "Self-supervised on the stack itself: windows of 2 x 13 slices give 13 input (odd) and 13 "
                     "target (even) slices; the loss adds the target re-blurred by the PSF (by FFT, at twice the "
                     "stack's z spacing), a Hessian and a gap-amending term. Intensities are normalised once by a "
                     "fixed affine (percentiles 0.1 and 99.9 of the stack), stored with the model. The run folder "
                     "gets config.yaml, checkpoints/, final.pt and metrics.csv (with the loss on each volume's last "
                     "z-block, held out). --preset paper is the published 2.00 M-parameter network (a GPU network); "
                     "--preset small trains on a CPU in about an hour.",
                     "  zaugnet deconv train nucleus.tif --channel c1 -o runs/deconv --na 1.2 --wavelength 0.461 "
                     "--ni 1.333 --ns 1.36 --preset small\n"
                     "  zaugnet deconv train cells.tif -o runs/beads --psf beads.tif --preset paper --device cuda\n"
                     "  zaugnet deconv train nucleus.tif --channel c1 -o runs/deconv --resume\n")
    tr.add_argument("stacks", nargs="+", help="TIFF / OME-TIFF stacks (or folders of them) with their voxel size")
    tr.add_argument("-o", "--output", required=True, help="run folder (the model: RUN_DIR/final.pt)")
    _add_deconv_optics(tr, "of the loss")
    tr.add_argument("--excitation", type=_finite, help="simulate a confocal PSF: excitation wavelength in um")
    tr.add_argument("--preset", choices=["small", "paper"], help="network and training defaults (default paper: "
                    "the published 2.00 M-parameter network, meant for a GPU; small trains on a CPU)")
    tr.add_argument("--channel", help="which channel of a multichannel stack, e.g. c1 (every time point is used)")
    tr.add_argument("--voxel-size", type=_finite, nargs=2, metavar=("Z", "XY"), help="z and xy spacing in um "
                    "(default: the stack's)")
    tr.add_argument("--config", help="YAML file with config values (see config.yaml of any deconv run)")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one value, e.g. train.lr=3e-4 or "
                    "data.patch=[9,48,48]")
    tr.add_argument("--max-steps", type=int, help="training steps (default: the preset's)")
    tr.add_argument("--batch-size", type=int, help="windows per step (default: the preset's, 3)")
    tr.add_argument("--seed", type=int, help="random seed of weights and patches (default 0)")
    tr.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    tr.add_argument("--axes", help="axes of inputs without metadata, e.g. ZCYX")
    tr.add_argument("--resume", nargs="?", const="latest", help="continue from the latest checkpoint in RUN_DIR "
                    "(or the given one)")
    tr.add_argument("--overwrite", action="store_true", help="replace a previous run in RUN_DIR")
    _add_threads(tr)
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=_cmd_deconv_train)

    pr = _subcommand(actions, "predict", "deconvolve a stack with a trained ZS-DeconvNet or with Richardson-Lucy",
                     "--method auto (the default) runs a self-check first: each candidate (the model, and "
                     "Richardson-Lucy at 5, 10, 20 and 40 iterations with the model's PSF) deconvolves the odd "
                     "slices, its result is re-blurred by the PSF and compared with the even slices (mean absolute "
                     "error; on the model's held-out z-block when it has one, else the model needs a 10 percent lead, "
                     "its score being optimistic; on the first volume of a time series); the best one runs on "
                     "every volume and a one-line table of the "
                     "scores is printed. Without --model, auto is Richardson-Lucy with the count the self-check "
                     "picks. --method model writes the deconvolved stack to OUT and the denoiser's output to "
                     "OUT_denoised (same suffix); Richardson-Lucy writes OUT only. Outputs are float32 in the input's "
                     "units (the model's stored affine inverted; Richardson-Lucy adds the subtracted background "
                     "back), with the input's voxel size. The model runs on the whole stack in one piece when it "
                     "fits in memory, else on 3D tiles with a halo, stitched by keeping their centres.",
                     "  zaugnet deconv predict nucleus.tif --channel c1 -o nucleus_deconv.tif --model "
                     "runs/deconv/final.pt\n"
                     "  zaugnet deconv predict nucleus.tif --channel c1 -o nucleus_rl.tif --method rl --na 1.2 "
                     "--wavelength 0.461 --ni 1.333 --ns 1.36 --iterations 20\n")
    pr.add_argument("input", help="TIFF / OME-TIFF stack (3D, 4D t-z-y-x, or multichannel with --channel)")
    pr.add_argument("-o", "--output", required=True, help="output TIFF for the deconvolved stack (.tif: ImageJ, "
                    ".ome.tif: OME-TIFF); missing folders are created")
    pr.add_argument("--method", choices=["auto", "model", "rl"], help="auto (default): whichever of the model "
                    "and Richardson-Lucy the self-check scores best; model: the trained ZS-DeconvNet (--model); rl: "
                    "Richardson-Lucy with a PSF (--psf or --na/--wavelength/--ni)")
    pr.add_argument("--model", help="checkpoint of zaugnet deconv train (RUN_DIR/final.pt)")
    pr.add_argument("--channel", help="which channel of a multichannel stack, e.g. c1")
    pr.add_argument("--tile", type=int, nargs=3, metavar=("Z", "Y", "X"), help="model: tile size in voxels "
                    "(default: the whole stack when it fits in memory, else automatic)")
    pr.add_argument("--halo", type=int, nargs=3, metavar=("Z", "Y", "X"), help="model: context around each tile "
                    "(default: the network's receptive radius, 22 for the paper network, 96 for small; twice that in z)")
    pr.add_argument("--iterations", type=int, help="rl: Richardson-Lucy iterations (default 20)")
    pr.add_argument("--padding", choices=["zeros", "reflect"], help="rl, auto: boundary rule of Richardson-Lucy's "
                    "convolutions (default zeros, best on benchmarks/results/deconv.md)")
    _add_deconv_optics(pr, "for --method rl (or auto without --model)")
    pr.add_argument("--device", default="auto", help="model: auto (default), cpu, cuda, cuda:N")
    pr.add_argument("--axes", help="axes of inputs without metadata, e.g. ZCYX")
    _add_threads(pr)
    pr.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=_cmd_deconv_predict)


def _cores() -> int:
    """CPU cores this process may run on (its affinity, which job schedulers and containers set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _set_threads(args: argparse.Namespace) -> None:
    """``--threads`` (default: the cores this process may use) for torch's intra-op pool."""
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        raise InputError("--threads", f"must be at least 1, got {threads}")
    if "threads" in args:
        import torch

        # torchrun: the processes on this node share its cores
        per_process = max(1, _cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        torch.set_num_threads(threads or per_process)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that every ``finally`` and cleanup runs as for Ctrl-C."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        _set_threads(args)
        args.func(args)
    except InputError as err:
        print(f"zaugnet: error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        print(f"zaugnet: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
