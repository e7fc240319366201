"""BioImage.IO packages (model format 0.5) of trained ZS-DeconvNet (3D) models, through ZAugNet's export machinery.

A package holds the two-stage network (:class:`TwoStageNetwork`: denoiser, then deconvolver) in TorchScript (the
original) and ONNX (its child), checked against the eager network at export. It takes ONE tensor ``raw`` (batch,
channel, z, y, x) with one channel and returns ``denoised`` and ``deconvolved`` of the same size. Unlike ZAugNet's
packages the normalisation is NOT inside the network but declared in the rdf, because it is one FIXED affine (the
model's, computed once from its training stack): ``scale_linear`` pre-processing ``(raw - offset) / scale`` and
its inverse as post-processing of both outputs. Fixed, never per tile: deconvolution is intensity-linear, and
per-tile normalisation would make deepImageJ's tiles inconsistent.

Borders: ``zaugnet deconv predict`` puts :data:`zaugnet.deconv.predict.MARGIN` (4, 16, 16) zeros of normalised
intensity around the volume and crops them off. The package declares exactly that as its output halo, with
``pad: constant`` at the affine's offset (0 after the pre-processing), so bioimageio.core pads, runs and crops as
zaugnet does and a whole-volume prediction of the package equals ``zaugnet deconv predict --model``.

:func:`export_deconv_model` reuses :mod:`.bioimageio`: the output checks, staging folder, runtime checks
(:func:`~.bioimageio.check_runtimes`), cover layout, common rdf fields, packaging, deepImageJ's rdf form, the
bioimageio.core test and placement. Nothing from the checkpoint runs: it is read by
:func:`zaugnet.training.deconv.checkpoint.load_deconv_network` (``weights_only``, shapes checked first).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from zaugnet.training.checkpoint import load_checkpoint
from zaugnet.training.deconv.checkpoint import DeconvModel, load_deconv_network
from zaugnet.training.deconv.config import FAMILY

from zaugnet import __version__
from zaugnet.deconv.predict import MARGIN, ParitySplit, deconvolve_volume
from zaugnet.errors import InputError
from zaugnet.phantoms import simulate_stack

from .bioimageio import (
    FILES,
    TOLERANCE,
    ExportChecks,
    _check_figure,
    _fmt_errors,
    _write_tif,
    _zoo_section,
    attach_figures,
    author_dicts,
    check_package_output,
    check_runtimes,
    common_fields,
    describe,
    grey,
    model_id_from_name,
    package_and_place,
    package_config,
    save_pair_cover,
    staging,
)
from .onnx import OPSET
from .onnx import export_onnx as _export_onnx
from .torchscript import save_torchscript

#: The tensors' ids.
INPUT_ID, OUTPUT_IDS = "raw", ("denoised", "deconvolved")
#: Output halo (z, y, x): the zero margin of ``zaugnet deconv predict`` (:data:`zaugnet.deconv.predict.MARGIN`).
HALO = tuple(int(m) for m in MARGIN)
#: Smallest valid (padded) input per axis (z, y, x): the model format needs more than twice the halo (and the
#: note's z minimum, 8); the RCAN has no pooling and the U-Net pads y and x inside, so every larger size is valid.
MIN_SIZES = tuple(max(lo, 2 * h + 1) for lo, h in zip((8, 32, 32), HALO))
SIZE_STEPS = (1, 1, 1)
#: The sample (test tensors, cover) is centre-cropped to at most this many voxels per axis (z, y, x).
SAMPLE_MAX_SHAPE = (16, 96, 96)
#: Shapes (batch, z, y, x) of normalised inputs at which TorchScript and ONNX are compared with the eager network.
CHECK_SHAPES = ((1, 9, 33, 33), (2, 12, 40, 48), (1, 13, 37, 53))
FILES_DECONV = {
    "torchscript": "zs_deconvnet_torchscript.pt", "onnx": "zs_deconvnet.onnx",
    "test_input": "test_input.npy", "sample_input": "sample_input.tif",
    **{f"test_{o}": f"test_output_{o}.npy" for o in OUTPUT_IDS},
    **{f"sample_{o}": f"sample_output_{o}.tif" for o in OUTPUT_IDS},
}
PAPER_DECONV = {
    "text": "Qiao C., Zeng Y., Meng Q., et al. (2024). Zero-shot learning enables instant denoising and "
            "super-resolution in optical fluorescence microscopy. Nature Communications 15, 4180",
    "doi": "10.1038/s41467-024-48575-9",
}
DEFAULT_NAME = "ZS-DeconvNet 3D deconvolution"
DEFAULT_DESCRIPTION = ("Zero-shot 3D denoising and deconvolution (ZS-DeconvNet, two stages) trained on one "
                       "stack with its PSF; outputs the denoised and the deconvolved stack in the input's units.")
DEFAULT_TAGS = ("fluorescence-light-microscopy", "3d", "cells", "pytorch", "deepimagej", "fiji", "imagej",
                "image-restoration", "denoising", "deconvolution", "zs-deconvnet", "self-supervised", "onnx",
                "torchscript")
#: The Fiji macro of these packages (``fiji_macros/``).
MACRO = "zs_deconvnet.ijm"


class TwoStageNetwork(nn.Module):
    """The packaged network: ``x (B, 1, Z, Y, X)`` normalised -> ``(denoised, deconvolved)``, each of ``x``'s shape.

    The stages of a :class:`zaugnet.training.deconv.nets.ZSDeconvNet3D` without its Python-only shape check, so
    ``torch.jit.script`` and the ONNX exporter take it.
    """

    def __init__(self, denoiser: nn.Module, deconvolver: nn.Module) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.deconvolver = deconvolver

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        denoised = self.denoiser(x)
        return denoised, self.deconvolver(denoised)


def is_deconv_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a ZS-DeconvNet checkpoint (``kind``), read safely; False for anything else (ZAugNet's,
    or a file the loaders would refuse: their own message follows)."""
    try:
        return load_checkpoint(path).get("kind") == FAMILY
    except InputError:
        return False


# ------------------------------------------------------------------------------------ sample
def _sample_volume(sample: np.ndarray | None) -> tuple[np.ndarray, str]:
    """``(volume (Z, Y, X) float32, where it came from)``, centre-cropped to :data:`SAMPLE_MAX_SHAPE`."""
    if sample is None:
        volume = simulate_stack((16, 96, 96), kind="nuclei", seed=0)
        source = "a simulated nuclei phantom (zaugnet simulate --kind nuclei --seed 0), 16 x 96 x 96"
    else:
        volume = np.asarray(sample)
        if volume.ndim != 3 or not np.issubdtype(volume.dtype, np.number):
            raise InputError("sample", f"expected a volume (Z, Y, X), got shape {volume.shape}")
        source = "the given stack"
    volume = np.asarray(volume, dtype=np.float32)
    if not np.all(np.isfinite(volume)):
        raise InputError("sample", "holds NaN or infinite values")
    starts = [(n - min(n, m)) // 2 for n, m in zip(volume.shape, SAMPLE_MAX_SHAPE)]
    crop = tuple(slice(a, a + min(n, m)) for a, n, m in zip(starts, volume.shape, SAMPLE_MAX_SHAPE))
    cropped = np.ascontiguousarray(volume[crop])
    if cropped.shape != volume.shape:
        source += f", centre-cropped to {' x '.join(map(str, cropped.shape))}"
    return cropped, source


def _check_inputs(normalised: np.ndarray) -> list[np.ndarray]:
    """Normalised inputs of :data:`CHECK_SHAPES` cut from the sample (symmetric-extended where it is too small;
    a second batch element flipped along z and x)."""
    inputs = []
    for b, *shape in CHECK_SHAPES:
        pad = [(0, max(0, n - m)) for n, m in zip(shape, normalised.shape)]
        extended = np.pad(normalised, pad, mode="symmetric")[tuple(slice(0, n) for n in shape)]
        samples = [extended if i % 2 == 0 else extended[::-1, :, ::-1] for i in range(b)]
        inputs.append(np.ascontiguousarray(np.stack(samples)[:, None], dtype=np.float32))
    return inputs


def max_abs_error(got: Sequence[np.ndarray], want: Sequence[np.ndarray], batch: np.ndarray) -> float:
    """Max abs difference over every output (normalised units: a fraction of the affine's scale); ``inf`` if a
    shape differs."""
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want)):
        return float("inf")
    return max(float(np.abs(np.asarray(g, np.float64) - np.asarray(w, np.float64)).max()) for g, w in zip(got, want))


def _write_deconv_cover(path: Path, raw: np.ndarray, deconvolved: np.ndarray) -> None:
    """The cover, input -> output (2:1, no text): the middle z-slice of the raw test volume, then of the
    deconvolved one, each in grey between its own percentiles 0.1 and 99.9."""
    k = raw.shape[0] // 2

    def panel(volume: np.ndarray) -> np.ndarray:
        lo, hi = (float(v) for v in np.percentile(volume, (0.1, 99.9)))
        return np.repeat(grey(volume[k], lo, hi)[..., None], 3, axis=-1)

    save_pair_cover(path, panel(raw), panel(deconvolved))


# ------------------------------------------------------------------------------------ documentation
_DOC_TEMPLATE = """\
# {name}

Zero-shot 3D denoising and deconvolution: a two-stage {network} (ZS-DeconvNet), a denoiser followed by a
deconvolver, trained self-supervised on the stack itself (odd slices as input, even slices as target) with the
microscope's PSF in the loss. The PSF is only in the loss: the network is plain 3D convolutions. Having learnt
at twice the stack's z spacing, it runs on the odd and on the even slices apart (one batch of two), the outputs
interleaved back: the packaged network does this itself.

Reference: Qiao et al. 2024, "Zero-shot learning enables instant denoising and super-resolution in optical
fluorescence microscopy", Nature Communications, https://doi.org/{paper_doi}. Packaged by zaugnet
{zaugnet_version} (`zaugnet deconv train`, `zaugnet export`).

## Input and output

- `raw`: ONE tensor (batch, channel, z, y, x), float32, one channel, in the intensity units of the training
  stack (8-bit, 16-bit or float data converted to float32). Voxel size of the training stack: z {voxel_z:g} um,
  y/x {voxel_xy:g} um; other voxel sizes change what the PSF means to the network.
- `denoised`, `deconvolved`: the same shape, float32, in the input's units (the affine below is undone).
- Sizes: any z >= 1 and y, x >= 1 (no pooling, or padded inside); bioimageio.core pads the halo (below) first, so
  the padded size is at least {min_z} x {min_y} x {min_x} (z, y, x), steps of 1.

## Normalisation (fixed, declared in the rdf)

Pre-processing `scale_linear` with gain {gain:.9g} and offset {pre_offset:.9g}, i.e. normalised = (raw - {offset:.9g})
/ {scale:.9g}, the affine `zaugnet deconv train` computed once from the training stack (its percentiles
{percentiles}); post-processing of both outputs: its inverse (gain {scale:.9g}, offset {offset:.9g}). The same
affine for every tile and every stack: deconvolution is linear in intensity, so the outputs stay quantitative
(no stretch to percentiles, no 16-bit rescaling) and tiles agree. Neither bioimageio.core nor deepImageJ may
normalise otherwise.

## Borders, halo and tiling

Each output declares a halo of {halo_z} slices in z and {halo_xy} pixels in y and x, with `pad: constant` at the
offset ({offset:.9g}, 0 after the pre-processing): bioimageio.core pads the input by the halo with that value,
runs the network and crops the halo off. That is exactly what `zaugnet deconv predict --model` does (a margin of
{halo_z} / {halo_xy} / {halo_xy} zeros of normalised intensity around the volume), so a whole-volume prediction of this
package equals it. The convolutions reach {radius} voxels along each axis (the receptive radius), more than
the halo, and the channel attention averages over the whole input: tiles therefore differ a little from a
whole-volume prediction near their edges. For zaugnet's result, run the whole stack as one tile
(deepImageJ: one call for the stack, see `fiji_macros/{macro}`; zaugnet predicts in one piece when it fits in
memory). deepImageJ may pad the image borders by mirroring instead of the constant: the outermost voxels can then
differ from zaugnet's.

## Use

- zaugnet: `zaugnet deconv predict stack.tif -o stack_deconv.tif --model RUN_DIR/final.pt` (the checkpoint this
  package was exported from).
- bioimageio.core: `bioimageio predict ./this.zip --inputs raw.npy --outputs denoised.npy --outputs
  deconvolved.npy` with a (1, 1, z, y, x) float32 array (one `--outputs` per output: bioimageio.core 0.11 reads
  a single `--outputs` pattern as one path).
- deepImageJ (Fiji): open the stack (one channel; z as SLICES), then run the model on it in one call, or use the
  macro `fiji_macros/{macro}` of the zaugnet repository, which does that for a stack file or the current image
  and keeps the voxel size.

## Weights

- `torchscript` (original, scripted from zaugnet's network; runs at any size): `{torchscript_file}`,
  TorchScript archive format version {ts_version} (written by torch {torch_version}).
- `onnx`: `{onnx_file}`, opset {opset}, ONNX IR version {ir_version} (onnxruntime-java in deepImageJ reads
  IR <= 8), dynamic batch, z, y and x; two outputs.

## Training

Self-supervised on {n_files} stack(s) ({files}): preset `{preset}`, a {network} per stage, {steps} steps,
batch {batch_size}, patches {patch} (z, y, x), Adam lr {lr}.
The full training configuration (with the PSF's source) is in the rdf under `config.zaugnet.training`.
The rdf has no `training_data` entry: bioimageio.spec accepts there only a model-zoo dataset id or a complete
dataset description of its own, so the training data are described here.

{zoo_section}
# Validation

- Held-out z-block during training: {metrics}.
- Export checks of this package: TorchScript and ONNX Runtime against the eager PyTorch network on normalised
  inputs of shape (batch, z, y, x) {shapes}. Max abs difference over both outputs, in normalised units (a fraction
  of the affine's scale {scale:.9g}): TorchScript {ts_errors}; ONNX Runtime {onnx_errors} (tolerance {tolerance:g}).
- {test_line}
- Sample (test tensors, cover): {sample_source}. The test input is it padded by the halo with the offset (as
  bioimageio.core pads before predicting; its test of the outputs runs the network on the test input without
  padding or cropping), the test outputs are the network's outputs on that, uncropped: their centre is
  `zaugnet deconv predict`'s result on the sample.
- Cover (`{cover_file}`), input -> output: the middle z-slice of the raw test volume, then of the deconvolved one,
  each in grey between its own percentiles 0.1 and 99.9.

Deconvolution networks can hallucinate under domain shift and ring with a mismatched PSF: compare with
Richardson-Lucy (`zaugnet deconv predict --method rl`) on your data.
"""


def _documentation(*, name: str, model: DeconvModel, checks: ExportChecks, history: list[dict[str, Any]],
                   data_files: list[str], sample_source: str, extra: str | None, figures: list[str], tested: bool,
                   model_id: str) -> str:
    cfg = model.config
    last = history[-1] if history else {}
    shown = {k: v for k, v in last.items() if k.startswith("val_") and isinstance(v, (int, float))}
    metrics = ("none recorded in the checkpoint" if not shown else
               ", ".join(f"{k} {v:.4g}" for k, v in shown.items()) + f" (step {int(last.get('step', 0))})")
    test_line = ("bioimageio.core's test (both weight formats; batch 1 and 2; the smallest sizes) ran on this "
                 "package before it was written; the export refuses on any failed check or warning except the one "
                 "that no maintainer with a GitHub user name is given (checking such a name needs the GitHub API)."
                 if tested else "bioimageio.core's test was NOT run for this package (exported with test=False).")
    a, net = model.affine, cfg.net
    network = (f"3D U-Net ({net.levels} poolings in y and x, {net.channels} / {2 * net.channels} channels)"
               if net.kind == "unet" else
               f"3D RCAN ({net.channels} channels, {net.groups} residual group(s) x {net.blocks} block(s))")
    text = _DOC_TEMPLATE.format(
        name=name, paper_doi=PAPER_DECONV["doi"], zaugnet_version=__version__, voxel_z=model.voxel_size[0],
        voxel_xy=model.voxel_size[1], min_z=MIN_SIZES[0], min_y=MIN_SIZES[1], min_x=MIN_SIZES[2],
        gain=1.0 / a.scale, pre_offset=-a.offset / a.scale, offset=a.offset, scale=a.scale,
        percentiles=" and ".join(f"{p:g}" for p in cfg.data.percentiles), halo_z=HALO[0], halo_xy=HALO[1],
        radius=model.receptive_radius, macro=MACRO, torchscript_file=FILES_DECONV["torchscript"],
        ts_version=checks.torchscript_version, torch_version=torch.__version__.split("+")[0],
        onnx_file=FILES_DECONV["onnx"], opset=checks.onnx_opset, ir_version=checks.onnx_ir_version,
        n_files=len(data_files), files=", ".join(data_files[:5]) + (" ..." if len(data_files) > 5 else "") or "unknown",
        network=network,
        preset=cfg.preset, steps=model.step,
        batch_size=cfg.train.batch_size, patch=" x ".join(map(str, cfg.data.patch)), lr=f"{cfg.train.lr:g}",
        zoo_section=_zoo_section(model_id), metrics=metrics,
        shapes=", ".join("(" + ", ".join(map(str, s)) + ")" for s in checks.shapes),
        ts_errors=_fmt_errors(checks.torchscript_error), onnx_errors=_fmt_errors(checks.onnx_error),
        tolerance=TOLERANCE, test_line=test_line, sample_source=sample_source, cover_file=FILES["cover"])
    if extra:
        text += "\n" + extra.strip() + "\n"
    for fig in figures:
        text += f"\n![{fig}]({fig})\n"
    return text


# ------------------------------------------------------------------------------------ rdf
def _build_description(stage: Path, *, model: DeconvModel, checks: ExportChecks, fields: dict[str, Any],
                       extra_config: dict[str, Any]):  # noqa: ANN202 - ModelDescr
    from bioimageio.spec.model import v0_5

    def file(name_: str) -> v0_5.FileDescr:
        return v0_5.FileDescr(source=stage / name_)

    a = model.affine
    torch_version = v0_5.Version(torch.__version__.split("+")[0])
    inp = v0_5.TensorId(INPUT_ID)
    ids = [v0_5.AxisId(n) for n in "zyx"]
    inputs = [v0_5.InputTensorDescr(
        id=inp,
        description="the raw stack, one channel, in the training stack's intensity units",
        axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=[v0_5.Identifier("raw")]),
              *(v0_5.SpaceInputAxis(id=i, size=v0_5.ParameterizedSize(min=m, step=s))
                for i, m, s in zip(ids, MIN_SIZES, SIZE_STEPS))],
        test_tensor=file(FILES_DECONV["test_input"]), sample_tensor=file(FILES_DECONV["sample_input"]),
        data=v0_5.IntervalOrRatioDataDescr(type="float32"),
        pad=v0_5.ConstantPadding(value=a.offset),
        preprocessing=[v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=1.0 / a.scale,
                                                                           offset=-a.offset / a.scale))],
    )]
    what = {"denoised": "the denoised stack (first stage)",
            "deconvolved": "the deconvolved stack (second stage, fed with the denoised one)"}
    outputs = [v0_5.OutputTensorDescr(
        id=v0_5.TensorId(o),
        description=f"{what[o]}, in the input's intensity units",
        axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=[v0_5.Identifier(o)]),
              *(v0_5.SpaceOutputAxisWithHalo(id=i, size=v0_5.SizeReference(tensor_id=inp, axis_id=i, offset=0),
                                             halo=h)
                for i, h in zip(ids, HALO))],
        test_tensor=file(FILES_DECONV[f"test_{o}"]), sample_tensor=file(FILES_DECONV[f"sample_{o}"]),
        data=v0_5.IntervalOrRatioDataDescr(type="float32"),
        postprocessing=[v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=a.scale, offset=a.offset))],
    ) for o in OUTPUT_IDS]
    weights = v0_5.WeightsDescr(
        torchscript=v0_5.TorchscriptWeightsDescr(
            source=stage / FILES_DECONV["torchscript"], pytorch_version=torch_version,
            comment=f"original: scripted from zaugnet's network; TorchScript archive format version "
                    f"{checks.torchscript_version}"),
        onnx=v0_5.OnnxWeightsDescr(
            source=stage / FILES_DECONV["onnx"], opset_version=checks.onnx_opset, parent="torchscript",
            comment=f"legacy exporter, dynamic batch/z/y/x; ONNX IR version {checks.onnx_ir_version}"),
    )
    cfg = model.config
    zaugnet_config = {
        "family": FAMILY,
        "zaugnet_version": __version__,
        "input": INPUT_ID,
        "outputs": list(OUTPUT_IDS),
        "normalization": {"where": "rdf pre/postprocessing (fixed scale_linear)", "offset": a.offset,
                          "scale": a.scale, "percentiles": list(cfg.data.percentiles)},
        "voxel_size_um": {"z": model.voxel_size[0], "xy": model.voxel_size[1]},
        "receptive_radius": model.receptive_radius,
        "halo": {"z": HALO[0], "y": HALO[1], "x": HALO[2], "padding": "constant at the offset"},
        "size": {"min": list(MIN_SIZES), "step": list(SIZE_STEPS)},
        "torchscript_archive_version": checks.torchscript_version,
        "onnx": {"opset": checks.onnx_opset, "ir_version": checks.onnx_ir_version},
        "export_checks": {"tolerance": TOLERANCE, "units": "normalised", "shapes": [list(s) for s in checks.shapes],
                          "torchscript_max_error": checks.torchscript_error, "onnx_max_error": checks.onnx_error},
        "training": cfg.to_dict(),
        **extra_config,
    }
    return v0_5.ModelDescr(**fields, inputs=inputs, outputs=outputs, weights=weights,
                           config=package_config(float(TOLERANCE * a.scale), zaugnet_config))


# ------------------------------------------------------------------------------------ entry point
def export_deconv_model(checkpoint: str | Path, output: str | Path, *, test: bool = True,
                        sample: np.ndarray | None = None, name: str | None = None, description: str | None = None,
                        authors: Sequence[str | dict[str, Any]] | None = None, version: str = "0.1.0",
                        license: str = "MIT", tags: Sequence[str] | None = None,  # noqa: A002 - the rdf's field
                        documentation: str | None = None, figures: Sequence[str | Path] = (),
                        maintainers: Sequence[str] = (), model_id: str | None = None,
                        overwrite: bool = False) -> Path:
    """A ZS-DeconvNet checkpoint (``zaugnet deconv train``'s ``RUN_DIR/final.pt``) -> a BioImage.IO package: a
    .zip file if ``output`` ends with .zip, else a folder.

    Parameters
    ----------
    checkpoint
        A ZS-DeconvNet checkpoint (read with ``weights_only=True``; nothing in it runs).
    output
        ``NAME.zip`` or a folder.
    test
        Run bioimageio.core's test on the package before writing it (any failed check or warning refuses);
        the runtime parity checks always run.
    sample
        A volume ``(Z, Y, X)`` for the test and sample tensors and the cover, in the training stack's units,
        centre-cropped to at most 16 x 96 x 96. Default: a simulated nuclei phantom.
    name, description, authors, version, license, tags, documentation, figures, maintainers, model_id, overwrite
        As for :func:`zaugnet.export.bioimageio.export_model`.

    Returns
    -------
    Path
        ``output``.

    Raises
    ------
    InputError
        For a bad (or code-running) checkpoint, sample or output, a runtime disagreement, or a failed
        bioimageio test; nothing is written then.
    """
    output = check_package_output(output, overwrite)
    figure_paths = [Path(f) for f in figures]
    for f in figure_paths:
        _check_figure(f)
    state = load_checkpoint(checkpoint)
    model = load_deconv_network(checkpoint)
    network = ParitySplit(TwoStageNetwork(model.network.denoiser, model.network.deconvolver)).eval()
    volume, sample_source = _sample_volume(sample)
    # bioimageio.core reproduces the test outputs without padding or cropping: the test input is the sample as
    # the network gets it (padded by the halo with the offset, 0 once normalised) and the outputs are uncropped
    padded = np.pad(volume, [(h, h) for h in HALO], constant_values=np.float32(model.affine.offset))
    outputs = deconvolve_volume(padded, network, model.affine, margin=(0, 0, 0))
    centre = tuple(slice(h, h + n) for h, n in zip(HALO, volume.shape))
    test_input = padded[None, None]
    test_outputs = {o: out[None, None] for o, out in zip(OUTPUT_IDS, outputs)}
    deconvolved = outputs[1][centre]  # = deconvolve_volume(volume, ..., margin=HALO): zaugnet deconv predict
    author_list = author_dicts(authors)
    rdf_name = name or DEFAULT_NAME
    rdf_id = model_id_from_name(rdf_name) if model_id is None else model_id

    with staging(output) as tmp:
        stage = tmp / "files"
        normalised = model.affine.normalise(volume)
        save_torchscript(network, stage / FILES_DECONV["torchscript"])
        _export_onnx(network, stage / FILES_DECONV["onnx"], torch.from_numpy(_check_inputs(normalised)[0]),
                     opset=OPSET, input_names=(INPUT_ID,), output_names=OUTPUT_IDS)
        checks = check_runtimes(network, stage / FILES_DECONV["torchscript"], stage / FILES_DECONV["onnx"],
                                _check_inputs(normalised), error=max_abs_error, what="in normalised units")
        np.save(stage / FILES_DECONV["test_input"], test_input)
        _write_tif(stage / FILES_DECONV["sample_input"], padded, "ZYX")
        for o in OUTPUT_IDS:
            np.save(stage / FILES_DECONV[f"test_{o}"], test_outputs[o])
            _write_tif(stage / FILES_DECONV[f"sample_{o}"], test_outputs[o][0, 0], "ZYX")
        _write_deconv_cover(stage / FILES["cover"], volume, deconvolved)
        attached = attach_figures(figure_paths, stage)
        (stage / FILES["documentation"]).write_text(_documentation(
            name=rdf_name, model=model, checks=checks, history=list(state.get("history") or []),
            data_files=[str(d) for d in state.get("data") or []], sample_source=sample_source, extra=documentation,
            figures=attached, tested=test, model_id=rdf_id))
        extra_config = {"checkpoint": {"step": model.step, "file": Path(checkpoint).name}}
        descr = describe(lambda: _build_description(
            stage, model=model, checks=checks, extra_config=extra_config,
            fields=common_fields(stage, name=rdf_name, description=description or DEFAULT_DESCRIPTION,
                                 authors=author_list, version=version, license_id=license,
                                 tags=tags or DEFAULT_TAGS, attachments=attached, model_id=rdf_id,
                                 maintainers=maintainers, cite=(PAPER_DECONV,))), output, maintainers)
        package_and_place(descr, tmp, output, test=test, maintainers=maintainers, overwrite=overwrite)
    return output
