"""BioImage.IO packages (model format 0.5) of trained students, tested with bioimageio.core before they are written.

A package holds the student only (no teacher, no critic), wrapped by
:class:`~zaugnet.export.wrapper.NormalizedStudent` so it takes ONE tensor ``(batch, channel, y, x)``
in the user's intensity units and returns ``(batch, 1, y, x)`` in the same units: no pre- or
postprocessing for bioimageio.core or deepImageJ to get wrong (the DPM channel of ZAugNet+ and
ZAugNet-C is never rescaled). Input channels: ``[slice_0, slice_1]`` (ZAugNet), ``[slice_0, slice_1,
dpm]`` (ZAugNet+), ``[slice_m1, slice_0, slice_1, slice_2, dpm]`` (ZAugNet-C with K = 4 slices; see
:func:`channel_names`). Three weight formats: ``pytorch_state_dict`` (the original, with its architecture file),
``torchscript`` and ``onnx`` (both converted from it, so they name it as ``parent``).

:func:`export_model` builds everything in a staging folder beside the output, checks the three runtimes
against each other, packages with bioimageio.spec, rewrites the packaged rdf in the form deepImageJ 3.1
reads (:func:`jdll_compatible_rdf`), runs ``bioimageio.core.test_model`` on that package and only then moves
it into place. A failed check or any warning leaves nothing behind.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from zaugnet.training.checkpoint import load_checkpoint, load_generator
from zaugnet.training.config import Config

from zaugnet import __version__
from zaugnet.errors import InputError
from zaugnet.gaps import context_indices, context_offsets
from zaugnet.phantoms import simulate_stack
from zaugnet.variants import variant as get_variant

from .architecture import CALLABLE, FILE_NAME, architecture_kwargs, architecture_source
from .onnx import (
    OPSET,
    ErrorMeasure,
    check_onnx,
    max_relative_error,
    network_outputs,
    onnx_versions,
)
from .onnx import export_onnx as _export_onnx
from .parity import TOLERANCE, intensity_span
from .safezip import extract_zip
from .torchscript import load_torchscript, save_torchscript, torchscript_format_version
from .wrapper import NormalizedStudent

#: Valid input sizes along y and x: MIN_SIZE + n * SIZE_STEP (the student pads to multiples of 16 inside).
MIN_SIZE = 32
SIZE_STEP = 16
#: The sample (test tensors, cover) is centre-cropped to at most this many pixels per side.
SAMPLE_MAX_SIZE = 256
#: Context each side of a tile beyond which tiled and whole-image predictions agree (measured, see docs).
TILING_CONTEXT = 96
#: Output names that read as another kind of file than a package (.zip) or a folder.
NOT_A_PACKAGE = (".tar", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".yaml", ".yml", ".pt", ".onnx",
                 ".tif", ".tiff", ".png", ".json")
#: Shapes (batch, y, x) at which TorchScript and ONNX are compared with the eager network at export.
CHECK_SHAPES = ((1, 32, 32), (2, 48, 80), (1, 37, 53), (1, 72, 45))

PAPER = {
    "text": "Pasqui A., Mahdavi S., Vianay B., Colin A., Dumollard R., McDougall A., Miroshnikova Y. A., "
            "Labrune E., Turlier H. (2025). ZAugNet for Z-Slice Augmentation in Bio-Imaging. arXiv:2503.04843",
    "doi": "10.48550/arXiv.2503.04843",
    "url": "https://arxiv.org/abs/2503.04843",
}
#: The paper's datasets and pretrained models (its "Code and data availability": Zenodo). Cited as the method's
#: original data and weights; a package's own weights come from its checkpoint (see its documentation).
PAPER_DATA = {
    "text": "Datasets and pretrained models of Pasqui et al. (2025), ZAugNet for Z-Slice Augmentation in "
            "Bio-Imaging, on Zenodo; the original authors' data and weights, not those of this package "
            "(whose training is described in its documentation).",
    "doi": "10.5281/zenodo.14961732",
}
#: Model-zoo resources the packages link to (``links``): the deepImageJ application (not checked offline).
LINKS = ("deepimagej/deepimagej",)
#: The ``format_version`` the packaged rdf declares. deepImageJ 3.1 reads rdfs with JDLL 0.6.1, which casts
#: ``documentation`` to a string and each of ``covers`` to a string; bioimageio.spec >= 0.5.11 requires both as
#: ``{source, sha256}`` mappings for format 0.5.11 and later, and reads 0.5.10 with plain file names (it converts
#: them, then validates the rest as its own 0.5.x). See :func:`jdll_compatible_rdf`.
JDLL_FORMAT_VERSION = "0.5.10"
DEFAULT_TAGS = ("fluorescence-light-microscopy", "2d", "3d", "cells", "pytorch", "deepimagej", "fiji", "imagej",
                "unet", "image-reconstruction", "image-restoration", "z-interpolation", "axial-resolution",
                "zaugnet", "onnx", "torchscript")

FILES = {
    "state_dict": "zaugnet_state_dict.pt", "torchscript": "zaugnet_torchscript.pt", "onnx": "zaugnet.onnx",
    "test_input": "test_input.npy", "test_output": "test_output.npy", "sample_input": "sample_input.tif",
    "sample_output": "sample_output.tif", "cover": "cover.png", "documentation": "README.md",
}
#: The name of the rdf inside a package.
RDF_FILE = "rdf.yaml"


@dataclass
class ExportChecks:
    """What the export measured before packaging (also written to the rdf's ``config.zaugnet``)."""

    shapes: list[tuple[int, ...]]
    torchscript_error: list[float]
    onnx_error: list[float]
    torchscript_version: int
    onnx_ir_version: int
    onnx_opset: int


# ------------------------------------------------------------------------------------ sample
def channel_names(n_slices: int, with_dpm: bool) -> list[str]:
    """The input tensor's channel names: ``slice_<offset>`` per image channel (offsets in gaps from the gap's
    first slice), then ``dpm``. Negative offsets are written ``m1``, ``m2``, ...: channel names must be
    Python identifiers in the model format (``slice_-1`` is not one)."""
    names = [f"slice_{o}" if o >= 0 else f"slice_m{-o}" for o in context_offsets(n_slices)]
    return names + (["dpm"] if with_dpm else [])


def _sample_window(sample: np.ndarray | None, n_slices: int = 2) -> tuple[np.ndarray, np.ndarray | None, str]:
    """``(window (K, Y, X) float32, truth (Y, X) or None, where it came from)``, centre-cropped to a valid size.

    Two-slice models: slices ``k`` and ``k + 2`` around the stack's middle, slice ``k + 1`` as truth.
    ZAugNet-C (``n_slices`` = K > 2): the K slices around the stack's middle gap at spacing 1 (the gap
    lies between window slices K/2 - 1 and K/2), edge slices repeated where the stack is shorter than K,
    as ``zaugnet predict`` does; no truth.
    """
    if sample is None:
        if n_slices == 2:
            volume = simulate_stack((3, 128, 128), kind="membrane", seed=0)
            source = "a simulated membrane phantom (zaugnet simulate --kind membrane --seed 0), slices 0 and 2"
            window, truth = volume[[0, 2]], volume[1]
        else:
            volume = simulate_stack((n_slices, 128, 128), kind="membrane", seed=0)
            source = (f"a simulated membrane phantom (zaugnet simulate --kind membrane --seed 0), slices 0 to "
                      f"{n_slices - 1}")
            window, truth = volume, None
    else:
        array = np.asarray(sample)
        if array.ndim != 3 or array.shape[0] < 2 or not np.issubdtype(array.dtype, np.number):
            raise InputError("sample", f"expected a pair (2, Y, X) or a stack (Z, Y, X), got shape {array.shape}")
        if n_slices > 2:
            gap = (array.shape[0] - 1) // 2
            idx = context_indices(gap, 1, n_slices, 0, array.shape[0])
            window, truth = array[idx], None
            source = (f"slices {', '.join(str(i) for i in idx)} of the given stack (the gap between slices {gap} "
                      f"and {gap + 1}; edge slices repeated as at the ends of a stack)")
        elif array.shape[0] == 2:
            window, truth, source = array, None, "the given pair of slices"
        else:
            k = max(0, array.shape[0] // 2 - 1)
            window, truth = array[[k, k + 2]], array[k + 1]
            source = f"slices {k} and {k + 2} of the given stack (slice {k + 1} is the truth)"
    window = np.asarray(window, dtype=np.float32)
    if not np.all(np.isfinite(window)):
        raise InputError("sample", "holds NaN or infinite values")
    h, w = window.shape[1:]
    sizes = []
    for n in (h, w):
        if n < MIN_SIZE:
            raise InputError("sample", f"slices of {h} x {w} pixels: need at least {MIN_SIZE} x {MIN_SIZE}")
        sizes.append(MIN_SIZE + (min(n, SAMPLE_MAX_SIZE) - MIN_SIZE) // SIZE_STEP * SIZE_STEP)
    y0, x0 = (h - sizes[0]) // 2, (w - sizes[1]) // 2
    crop = (slice(y0, y0 + sizes[0]), slice(x0, x0 + sizes[1]))
    window = np.ascontiguousarray(window[(slice(None), *crop)])
    if truth is not None:
        truth = np.ascontiguousarray(np.asarray(truth, dtype=np.float32)[crop])
    return window, truth, source


def _model_input(window: np.ndarray, with_dpm: bool, z: float) -> np.ndarray:
    """``(1, C, Y, X)`` float32 network input: the K slices, plus the DPM plane for ZAugNet+ and ZAugNet-C."""
    channels = list(window) + ([np.full(window.shape[1:], z, dtype=np.float32)] if with_dpm else [])
    return np.stack(channels)[None].astype(np.float32)


def _check_inputs(window: np.ndarray, with_dpm: bool) -> list[np.ndarray]:
    """Inputs of :data:`CHECK_SHAPES` cut from the sample (reflect-extended where it is too small)."""
    inputs = []
    for b, h, w in CHECK_SHAPES:
        extended = np.pad(window, ((0, 0), (0, max(0, h - window.shape[1])), (0, max(0, w - window.shape[2]))),
                          mode="reflect")
        samples = []
        for i in range(b):
            p = extended[::-1] if i % 2 else extended  # second sample: the slices in reverse order
            samples.append(_model_input(np.ascontiguousarray(p[:, :h, :w]), with_dpm, 0.5 - 0.25 * i)[0])
        inputs.append(np.stack(samples))
    return inputs


# ------------------------------------------------------------------------------------ checks
def _predict(network: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return network(torch.from_numpy(np.ascontiguousarray(batch))).numpy()


def check_runtimes(network: torch.nn.Module, ts_path: Path, onnx_path: Path, inputs: list[np.ndarray],
                   error: ErrorMeasure = max_relative_error, what: str = "of the intensity range") -> ExportChecks:
    """Compare TorchScript and ONNX Runtime with the eager ``network`` (every output) on each input batch;
    refuse beyond :data:`TOLERANCE` of ``error`` (default ZAugNet's, relative to each input's intensity range;
    ``what`` names its unit in messages)."""
    scripted = load_torchscript(ts_path)
    ts_errors = []
    for batch in inputs:
        err = error(network_outputs(scripted, batch), network_outputs(network, batch), batch)
        if not err <= TOLERANCE:
            raise InputError(ts_path, f"TorchScript differs from the network on shape {batch.shape}: "
                                      f"{err:.3g} {what} > {TOLERANCE:g}")
        ts_errors.append(err)
    onnx_errors = check_onnx(onnx_path, network, inputs, TOLERANCE, error)
    ir, opset = onnx_versions(onnx_path)
    return ExportChecks([tuple(int(s) for s in (b.shape[0], *b.shape[2:])) for b in inputs], ts_errors, onnx_errors,
                        torchscript_format_version(ts_path), ir, opset)


def _check_runtimes(network: NormalizedStudent, ts_path: Path, onnx_path: Path,
                    inputs: list[np.ndarray]) -> ExportChecks:
    """ZAugNet's checks: :func:`check_runtimes` relative to each input's intensity range."""
    return check_runtimes(network, ts_path, onnx_path, inputs)


# ------------------------------------------------------------------------------------ files
#: The cover's panels are at least this many pixels high (smaller samples are enlarged by pixel repetition).
COVER_MIN_SIZE = 256


def _write_cover(path: Path, window: np.ndarray, prediction: np.ndarray) -> None:
    """The cover: an image pair input -> output, 2:1, no text (the model zoo's guidance for covers).

    Left, the input: the gap's two slices overlaid (``slice_0`` magenta, ``slice_1`` green; grey where they
    agree); right, the output: the predicted slice in grey. Both on the image slices' joint intensity range,
    centre-cropped to a square and enlarged by an integer factor to at least :data:`COVER_MIN_SIZE` pixels.
    Written from the test tensors only (``window`` = the input's image channels, ``prediction`` = the test
    output), so a package's cover can be rebuilt from its ``test_input.npy`` and ``test_output.npy``.
    """
    k = len(window) // 2 - 1  # slice_0
    lo, hi = float(window.min()), float(window.max())
    first, second, out = (grey(a, lo, hi) for a in (window[k], window[k + 1], prediction))
    save_pair_cover(path, np.stack([first, second, first], axis=-1), np.repeat(out[..., None], 3, axis=-1))


def grey(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``image`` mapped from ``[lo, hi]`` to ``[0, 1]`` (clipped; a flat range maps by 1)."""
    return np.clip((np.asarray(image, dtype=np.float64) - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)


def save_pair_cover(path: Path, left: np.ndarray, right: np.ndarray) -> None:
    """A cover PNG: two ``(Y, X, 3)`` RGB images in [0, 1] side by side (2:1), each centre-cropped to a square and
    enlarged by an integer factor to at least :data:`COVER_MIN_SIZE` pixels."""
    from PIL import Image  # Pillow: a dependency of matplotlib

    side = min(right.shape[:2])
    y0, x0 = (right.shape[0] - side) // 2, (right.shape[1] - side) // 2
    crop = (slice(y0, y0 + side), slice(x0, x0 + side))
    rgb = np.concatenate([left[crop], right[crop]], axis=1)
    factor = -(-COVER_MIN_SIZE // side)
    rgb = np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)
    Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(path, format="PNG")


def _write_tif(path: Path, array: np.ndarray, axes: str) -> None:
    import tifffile

    tifffile.imwrite(path, np.ascontiguousarray(array, dtype=np.float32), imagej=True, metadata={"axes": axes})


def _fmt_errors(errors: Sequence[float]) -> str:
    return ", ".join(f"{e:.1e}" for e in errors)


_DOC_TEMPLATE = """\
# {name}

{variant_text}

Reference: Pasqui et al. 2025, "ZAugNet for Z-Slice Augmentation in Bio-Imaging", {paper_url}.
Packaged by zaugnet {zaugnet_version}.

## Input and output

- `input`: ONE tensor (batch, channel, y, x), float32, channels {channels}. The slices are in any intensity
  units (8-bit, 16-bit or float data converted to float32). {channel_note}
- `output`: (batch, 1, y, x), the predicted slice `slice_z`, in the same units as the input.
- Sizes: y and x of at least {min_size}, in steps of {step} ({min_size}, {next_size}, ...). The network itself
  reflect-pads to a multiple of 16 and crops back, so ZAugNet's own predictor (`zaugnet predict --model
  this.zip`) takes any size; bioimageio.core refuses sizes outside the steps (it follows this rdf).

Normalisation is part of the network: per sample it maps the joint {normalization} range of the {slices_word} to
[0, 1] (a constant input is guarded), runs the student and maps the prediction back. The rdf therefore declares
no pre- or postprocessing, and neither bioimageio.core nor deepImageJ must normalise.

## Use

- ZAugNet: `zaugnet predict stack.tif -o out.tif --model this.zip` (pairs, passes, tiling and z spacing handled).
- bioimageio.core: `bioimageio predict ./this.zip --inputs {input_file}.npy --outputs prediction.npy` with a
  (1, {n_channels}, y, x) float32 array.
- deepImageJ (Fiji): open the {what_slices} as ONE image with {n_channels} channels (channels, not slices:
  `Stack.setDimensions({n_channels},1,1)`), then run the model. Tiling is allowed. For a whole stack use the
  macro `fiji_macros/{macro}` of the zaugnet repository.

## Tiling and halo

No halo is declared. The network handles image borders itself, so a whole image needs no cropping; a declared
halo would make bioimageio.core pad and crop every prediction and change border pixels compared with ZAugNet's
own predictor (and the format requires min size > 2 x halo). Tiles, however, need context: measured on a
256 x 256 pair with the paper-size network, a tile's centre matches the whole-image prediction to about 1e-4
of the intensity range with 64 pixels of context on each side, and exactly with {context}. As the network
normalises each input tensor by its own range, a tile is also normalised by its own range. For results
identical to ZAugNet's predictor (which tiles with a 128-pixel halo and one range per pair), use one tile.

## Weights

- `pytorch_state_dict` (original): `{state_dict_file}` with the architecture `{arch_file}` (callable
  `{callable}`, generated from zaugnet's networks; needs only torch).
- `torchscript` (scripted, runs at any size): `{torchscript_file}`,
  TorchScript archive format version {ts_version} (`<archive>/version` in the zip; written by torch
  {torch_version}; archives exported this way load and run in torch 2.0.1 and 1.13.1).
- `onnx`: `{onnx_file}`, opset {opset}, ONNX IR version {ir_version} (onnxruntime-java 1.13 in deepImageJ
  reads IR <= 8), dynamic batch, y and x.

## Training

Self-supervised on {n_files} stack(s) ({files}): variant `{variant}`, preset `{preset}`, {steps} steps,
batch {batch_size}, Adam lr {lr}, adversarial weight {lambda_adv}, block widths {block_widths}. The full
training configuration is in the rdf under `config.zaugnet.training`. {training_data_note}

{zoo_section}
# Validation

- Held-out validation triplets during training (split by stack or z-block, not by triplet): {metrics}.
- Export checks of this package: TorchScript and ONNX Runtime against the eager PyTorch network on inputs of
  shape (batch, y, x) {shapes}, including non-square sizes and sizes that are not multiples of 16. Max abs
  difference relative to each input's intensity range (its slices): TorchScript {ts_errors}; ONNX Runtime {onnx_errors}
  (tolerance {tolerance:g}).
- {test_line}
- Sample (test tensors, cover): {sample_source}.{truth_line}
- {cover_line}

{closing}
"""


#: The documentation's note on the rdf's (absent) ``training_data`` entry, at the end of its Training section.
TRAINING_DATA_NOTE = (
    "The rdf has no `training_data` entry: bioimageio.spec accepts there only a model-zoo dataset id or a complete "
    "dataset description of its own, so the training data are described here.")

_ZOO_TEMPLATE = """\
## deepImageJ and the BioImage.IO model zoo

The rdf is written in the form deepImageJ 3.1 reads (it parses rdfs with JDLL 0.6.1): `format_version: "0.5.10"`,
`documentation` and `covers` as plain file names, and an `id`. JDLL casts `documentation` and each cover to a
string, so the `{{source, sha256}}` form that bioimageio.spec writes for format 0.5.11 and later makes it fail, and
it needs an `id` when the rdf has a `config` block (deepImageJ's macro also matches a bare `model_path` against
it). bioimageio.spec reads format 0.5.10: it converts the plain file names and validates the rest as its own
0.5.x. The documentation and the cover therefore carry no sha256; the weights, the architecture file, the tensors
and the attachments do. The `id`, `{model_id}`, is a local one: the model zoo assigns its own on upload.

Before uploading this package to the model zoo, a maintainer must add themselves with their GitHub user name
(`maintainers: [{{github_user: NAME}}]` in the rdf, or `export_model(..., maintainers=["NAME"])`): the zoo wants a
maintainer or an author with a `github_user`, and without one `bioimageio test` warns. bioimageio.spec checks
every such name on the GitHub API, so with one, validation needs the network: offline, `bioimageio test ./package`
and `bioimageio validate-format ./package` report the package as invalid (a connection error).
`BIOIMAGEIO_PERFORM_IO_CHECKS=false bioimageio validate-format ./package` validates it offline, skipping that check
and every other check that reads the package's files or the network (the sha256 of the files among them);
`bioimageio test` (bioimageio.core 0.11) makes these checks whatever the variable says, so run it with the
network. Keep the rdf's form above when editing it: saving it again with bioimageio.spec writes the mapping form,
which deepImageJ 3.1 cannot read.
"""


def _zoo_section(model_id: str) -> str:
    """The documentation's section on the rdf's deepImageJ-compatible form and on what to add before upload."""
    return _ZOO_TEMPLATE.format(model_id=model_id)


def _cover_line(z: float) -> str:
    """The documentation's line on the cover (see :func:`_write_cover`)."""
    return (f"Cover (`{FILES['cover']}`), input -> output: left, the gap's two input slices overlaid (`slice_0` "
            f"magenta, `slice_1` green, grey where they agree); right, the predicted slice at z = {z:g}; both on "
            "the input slices' intensity range.")


def _documentation(*, name: str, config: Config, variant_text: str, channel_names: list[str], checks: ExportChecks,
                   history: list[dict[str, Any]], data_files: list[str], sample_source: str, sample_error: float | None,
                   extra: str | None, figures: list[str], tested: bool, model_id: str, z: float) -> str:
    net, data, train = config.net, config.data, config.train
    last = history[-1] if history else {}
    metrics = ("none recorded in the checkpoint" if "val_psnr" not in last else
               f"PSNR {last['val_psnr']:.2f} dB (linear interpolation of the same pairs: "
               f"{last.get('val_psnr_linear', float('nan')):.2f} dB), SSIM {last.get('val_ssim', float('nan')):.3f}")
    normalization = (f"{data.percentiles[0]:g}-{data.percentiles[1]:g} percentile"
                     if data.normalization == "percentile" else "min-max")
    k = net.n_slices
    channel_note = ("The `dpm` channel is a constant plane holding the relative position z in [0, 1] of the slice "
                    "to predict (0 = slice_0, 1 = slice_1); it is never rescaled." if net.with_dpm else
                    "The predicted slice lies midway between the two (z = 0.5); apply the model k times for a "
                    "2^k z-upsampling.")
    closing = ("Two slices cannot see curvature along z: on smooth structures cubic interpolation (four slices) can "
               "beat any two-slice method. Compare with the linear and cubic baselines on your data "
               "(`zaugnet evaluate`).")
    if k > 2:
        lowest, highest = channel_names[0], channel_names[k - 1]
        channel_note = (
            f"The {k} slices are consecutive input slices at the stack's spacing: the new slice lies in the gap "
            f"between `slice_0` and `slice_1`, and `{lowest}` ... `{highest}` are the slices around it (`m` = minus: "
            f"`slice_m1` is the slice before `slice_0`). At the first and last gaps of a stack, where slices are "
            "missing, repeat the edge slice (the first gap of slices s0, s1, s2, ... is [s0, s0, s1, s2]; the last "
            "of ..., s(n-3), s(n-2), s(n-1) is [s(n-3), s(n-2), s(n-1), s(n-1)] for K = 4), as `zaugnet predict` "
            f"and the cubic baseline do. {channel_note}")
        closing = (
            f"The output is the 4-point Keys cubic interpolation (a = -0.5) of the inner four slices at z plus a "
            f"learned correction (a convolutional head over the {k} slices, the cubic estimate and the prediction "
            "of a ZAugNet+ flow branch on slice_0, slice_1 and the DPM). It is NOT clamped to the inputs' range: "
            "like cubic interpolation it may overshoot it slightly (8/16-bit results are clipped by zaugnet's "
            "predictor and the Fiji macro). Compare with the linear and cubic baselines on your data "
            "(`zaugnet evaluate`).")
    truth_line = ("" if sample_error is None else
                  f" The prediction's mean absolute error to the true middle slice is {sample_error:.3g} of the "
                  "pair's intensity range.")
    test_line = (f"bioimageio.core's test (all three weight formats; batch 1 and 2; sizes {MIN_SIZE} to "
                 f"{MIN_SIZE + 2 * SIZE_STEP}) ran on this package before it was written; the export refuses on any "
                 "failed check or warning except the one that no maintainer with a GitHub user name is given "
                 "(checking such a name needs the GitHub API)." if tested else
                 "bioimageio.core's test was NOT run for this package (exported with test=False).")
    text = _DOC_TEMPLATE.format(
        name=name, variant_text=variant_text, paper_url=PAPER["url"], zaugnet_version=__version__,
        channels=", ".join(f"`{c}`" for c in channel_names), channel_note=channel_note, min_size=MIN_SIZE,
        step=SIZE_STEP, next_size=MIN_SIZE + SIZE_STEP, max_test_size=MIN_SIZE + 2 * SIZE_STEP,
        normalization=normalization, n_channels=len(channel_names), context=TILING_CONTEXT,
        slices_word=("two slices" if k == 2 else f"{k} slices"), input_file=("pair" if k == 2 else "slices"),
        what_slices=("pair" if k == 2 else f"{k} slices (and the DPM plane)"),
        macro=get_variant(net.variant).macro,
        closing=closing,
        state_dict_file=FILES["state_dict"], arch_file=FILE_NAME, callable=CALLABLE,
        torchscript_file=FILES["torchscript"], ts_version=checks.torchscript_version,
        torch_version=torch.__version__.split("+")[0], onnx_file=FILES["onnx"], opset=checks.onnx_opset,
        ir_version=checks.onnx_ir_version, n_files=len(data_files),
        files=", ".join(data_files[:5]) + (" ..." if len(data_files) > 5 else "") or "unknown",
        variant=net.variant, preset=config.preset, steps=int(last.get("step", 0)), batch_size=train.batch_size,
        lr=f"{train.lr:g}", lambda_adv=f"{train.lambda_adv:g}", block_widths=list(net.block_widths),
        metrics=metrics, shapes=", ".join(f"({b}, {h}, {w})" for b, h, w in checks.shapes),
        ts_errors=_fmt_errors(checks.torchscript_error), onnx_errors=_fmt_errors(checks.onnx_error),
        tolerance=TOLERANCE, sample_source=sample_source, truth_line=truth_line, test_line=test_line,
        training_data_note=TRAINING_DATA_NOTE, zoo_section=_zoo_section(model_id), cover_line=_cover_line(z))
    if extra:
        text += "\n" + extra.strip() + "\n"
    for fig in figures:
        text += f"\n![{fig}]({fig})\n"
    return text


# ------------------------------------------------------------------------------------ rdf
def _build_description(stage: Path, *, name: str, description: str, authors: Sequence[dict[str, Any]],
                       version: str, license_id: str, tags: Sequence[str], config: Config,
                       channel_names: list[str], checks: ExportChecks, tolerance_abs: float,
                       attachments: list[str], extra_config: dict[str, Any], model_id: str,
                       maintainers: Sequence[str] = ()):  # noqa: ANN202 - ModelDescr
    from bioimageio.spec.model import v0_5

    def file(name_: str) -> v0_5.FileDescr:
        return v0_5.FileDescr(source=stage / name_)

    torch_version = v0_5.Version(torch.__version__.split("+")[0])
    y, x = v0_5.AxisId("y"), v0_5.AxisId("x")
    inp, out = v0_5.TensorId("input"), v0_5.TensorId("output")
    size = v0_5.ParameterizedSize(min=MIN_SIZE, step=SIZE_STEP)
    n_images = len(channel_names) - (1 if channel_names[-1] == "dpm" else 0)
    dpm = "; dpm = relative z in [0, 1]" if channel_names[-1] == "dpm" else ""
    what = ("two neighbouring z-slices" if n_images == 2 else
            f"{n_images} consecutive z-slices around the gap (edge slices repeated)")
    inputs = [v0_5.InputTensorDescr(
        id=inp,
        description=f"{what} as channels, any intensity units{dpm}",
        axes=[v0_5.BatchAxis(),
              v0_5.ChannelAxis(channel_names=[v0_5.Identifier(c) for c in channel_names]),
              v0_5.SpaceInputAxis(id=y, size=size), v0_5.SpaceInputAxis(id=x, size=size)],
        test_tensor=file(FILES["test_input"]), sample_tensor=file(FILES["sample_input"]),
        data=v0_5.IntervalOrRatioDataDescr(type="float32"),
    )]
    outputs = [v0_5.OutputTensorDescr(
        id=out,
        description="the predicted slice at z, in the input's intensity units",
        axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=[v0_5.Identifier("slice_z")]),
              v0_5.SpaceOutputAxis(id=y, size=v0_5.SizeReference(tensor_id=inp, axis_id=y, offset=0)),
              v0_5.SpaceOutputAxis(id=x, size=v0_5.SizeReference(tensor_id=inp, axis_id=x, offset=0))],
        test_tensor=file(FILES["test_output"]), sample_tensor=file(FILES["sample_output"]),
        data=v0_5.IntervalOrRatioDataDescr(type="float32"),
    )]
    weights = v0_5.WeightsDescr(
        pytorch_state_dict=v0_5.PytorchStateDictWeightsDescr(
            source=stage / FILES["state_dict"],
            architecture=v0_5.ArchitectureFromFileDescr(source=stage / FILE_NAME, callable=v0_5.Identifier(CALLABLE),
                                                        kwargs=architecture_kwargs(config)),
            pytorch_version=torch_version,
            comment="original weights; the architecture file is generated from zaugnet's networks"),
        torchscript=v0_5.TorchscriptWeightsDescr(
            source=stage / FILES["torchscript"], pytorch_version=torch_version, parent="pytorch_state_dict",
            comment=f"scripted; TorchScript archive format version {checks.torchscript_version}"),
        onnx=v0_5.OnnxWeightsDescr(
            source=stage / FILES["onnx"], opset_version=checks.onnx_opset, parent="pytorch_state_dict",
            comment=f"legacy exporter, dynamic batch/y/x; ONNX IR version {checks.onnx_ir_version}"),
    )
    zaugnet_config = {
        "variant": config.net.variant,
        "zaugnet_version": __version__,
        "input_channels": channel_names,
        "normalization": {"where": "inside the network", "mode": config.data.normalization,
                          "percentiles": list(config.data.percentiles)},
        "size": {"min": MIN_SIZE, "step": SIZE_STEP, "tiling_context_px": TILING_CONTEXT},
        "torchscript_archive_version": checks.torchscript_version,
        "onnx": {"opset": checks.onnx_opset, "ir_version": checks.onnx_ir_version},
        "export_checks": {"tolerance": TOLERANCE, "shapes": [list(s) for s in checks.shapes],
                          "torchscript_max_error": checks.torchscript_error, "onnx_max_error": checks.onnx_error},
        "training": config.to_dict(),
        **extra_config,
    }
    return v0_5.ModelDescr(
        **common_fields(stage, name=name, description=description, authors=authors, version=version,
                        license_id=license_id, tags=tags, attachments=attachments, model_id=model_id,
                        maintainers=maintainers, cite=(PAPER, PAPER_DATA)),
        inputs=inputs,
        outputs=outputs,
        weights=weights,
        config=package_config(tolerance_abs, zaugnet_config),
    )


def common_fields(stage: Path, *, name: str, description: str, authors: Sequence[dict[str, Any]], version: str,
                  license_id: str, tags: Sequence[str], attachments: Sequence[str], model_id: str,
                  maintainers: Sequence[str], cite: Sequence[dict[str, str]]) -> dict[str, Any]:
    """The ``ModelDescr`` fields every zaugnet package fills alike (name, id, people, citations, links, license,
    tags, version, documentation and cover (:data:`FILES`' names), attachments), from files staged in ``stage``."""
    from bioimageio.spec.model import v0_5

    def file(name_: str) -> v0_5.FileDescr:
        return v0_5.FileDescr(source=stage / name_)

    return {
        "name": name,
        "id": v0_5.ModelId(model_id),
        "description": description,
        "authors": [v0_5.Author(**a) for a in authors],
        "maintainers": [v0_5.Maintainer(github_user=m) for m in maintainers],
        "cite": [v0_5.CiteEntry(**c) for c in cite],
        "links": list(LINKS),
        "license": license_id,
        "tags": list(tags),
        "version": version,
        "documentation": file(FILES["documentation"]),
        "covers": [file(FILES["cover"])],
        "attachments": [file(a) for a in attachments],
    }


def package_config(tolerance_abs: float, zaugnet_config: dict[str, Any]):  # noqa: ANN201 - v0_5.Config
    """The rdf's ``config``: bioimageio.core's reproducibility tolerance (absolute, in the outputs' units),
    ``zaugnet`` (what zaugnet's loader and the Fiji macros read) and ``deepimagej`` (tiling allowed)."""
    from bioimageio.spec.model import v0_5

    return v0_5.Config(
        bioimageio=v0_5.BioimageioConfig(reproducibility_tolerance=[v0_5.ReproducibilityTolerance(
            absolute_tolerance=tolerance_abs, relative_tolerance=0.0, mismatched_elements_per_million=0)]),
        zaugnet=zaugnet_config,
        deepimagej={"pyramidal_model": False, "allow_tiling": True},
    )


# ------------------------------------------------------------------------------------ deepImageJ's form
def model_id_from_name(name: str) -> str:
    """The package's ``id`` made from its name: lower case, ``+`` as ``plus``, every other run of characters that
    are not letters or digits as one ``-`` ("ZAugNet+ z-slice interpolation" -> "zaugnet-plus-z-slice-interpolation").

    A local id (bioimageio.spec accepts any lower-case ``[a-z0-9_./-]`` id offline, with no warning); the model
    zoo assigns its own on upload. deepImageJ 3.1 (JDLL) needs one: see :func:`jdll_compatible_rdf`.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower().replace("+", "-plus-")).strip("-")
    return slug or "zaugnet-model"


def jdll_compatible_rdf(text: str) -> str:
    """The rdf as bioimageio.spec writes it (YAML text) -> the same rdf in the form deepImageJ 3.1 reads.

    deepImageJ 3.1 reads rdfs with JDLL 0.6.1 (``ModelDescriptorFactory.readFromLocalFile``; the tool
    ``../shared/tools/jdll-rdf/read-rdf`` runs that code). JDLL casts ``documentation`` to a string (the
    ``{source, sha256}`` mapping throws ClassCastException), takes each element of ``covers`` as a string (mappings
    break deepImageJ's model list), needs an ``id`` when the rdf has a ``config`` block (NullPointerException) and
    a string ``format_version`` starting with 0.4 or 0.5. bioimageio.spec >= 0.5.11 writes, and for format 0.5.11
    and later requires, the mappings; it reads format 0.5.10 with plain file names (converting them, then
    validating the rest as its own 0.5.x). So this writes ``documentation`` and ``covers`` as their file names
    (their sha256 is dropped: the loader checks the sha256 of every file that keeps one, which includes the
    weights, the architecture file and the tensors) and ``format_version: "0.5.10"`` (:data:`JDLL_FORMAT_VERSION`,
    quoted); every other field is kept as written, in the same order. The ``id`` comes from the description
    (:func:`_build_description`); an rdf without one, or not of format 0.5, is refused (ValueError).
    """
    from bioimageio.spec.utils import read_yaml, write_yaml
    from ruyaml.scalarstring import DoubleQuotedScalarString

    rdf = read_yaml(text)
    if not isinstance(rdf, dict) or not str(rdf.get("format_version", "")).startswith("0.5."):
        raise ValueError("expected a model rdf of format 0.5")
    if not rdf.get("id"):
        raise ValueError("the rdf has no id: deepImageJ 3.1 (JDLL 0.6.1) cannot read it with a config block")
    if isinstance(rdf.get("documentation"), dict):
        rdf["documentation"] = rdf["documentation"]["source"]
    rdf["covers"] = [c["source"] if isinstance(c, dict) else c for c in rdf.get("covers") or []]
    if not rdf["covers"]:
        del rdf["covers"]
    rdf["format_version"] = DoubleQuotedScalarString(JDLL_FORMAT_VERSION)
    out = io.StringIO()
    write_yaml(rdf, out)
    return out.getvalue()


def _write_jdll_rdf(package_zip: Path) -> None:
    """Replace the rdf in ``package_zip`` by :func:`jdll_compatible_rdf` of it; every other entry is copied as is."""
    rewritten = package_zip.with_name(package_zip.name + ".jdll")
    with zipfile.ZipFile(package_zip) as src, zipfile.ZipFile(rewritten, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == RDF_FILE:
                data = jdll_compatible_rdf(data.decode("utf-8")).encode("utf-8")
            dst.writestr(info, data)
    os.replace(rewritten, package_zip)


#: The one warning an offline export cannot avoid: bioimageio.spec wants a maintainer (or author) with a
#: ``github_user``, and it checks every such name on the GitHub API (no network: the description is invalid).
NO_MAINTAINER_WARNING = "Missing `maintainers` or any author in `authors` with a specified `github_user` name."


@dataclass
class Verdict:
    """bioimageio.core's verdict: ``problems`` (failed checks, warnings) and warnings accepted on purpose."""

    problems: list[str]
    accepted: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems


def judge_summary(summary: Any, accept: Sequence[str] = ()) -> Verdict:
    """Sort a bioimageio ``ValidationSummary``: every failed check and every warning above info is a problem,
    except warnings whose message is exactly one of ``accept``."""
    from bioimageio.spec._internal.warning_levels import INFO

    problems, accepted = [], []
    if summary.status != "passed":
        problems.append(f"status: {summary.status}")
    for detail in summary.details:
        for error in detail.errors:
            problems.append(f"failed: {detail.name}: {'.'.join(map(str, error.loc))}: {error.msg}")
        for warning in detail.warnings:
            if warning.severity > INFO:
                line = f"warning: {detail.name}: {'.'.join(map(str, warning.loc))}: {warning.msg}"
                (accepted if warning.msg in accept else problems).append(line)
    return Verdict(problems, accepted)


def run_bioimageio_test(source: str | Path, accept: Sequence[str] = ()) -> Verdict:
    """Run ``bioimageio.core.test_model`` on a package (zip or rdf.yaml) and sort its findings."""
    from bioimageio.core import test_model

    from .torchscript import _jit_on_purpose

    with _jit_on_purpose():
        return judge_summary(test_model(str(source)), accept)


# ------------------------------------------------------------------------------------ entry point
def _place(package_zip: Path, output: Path, overwrite: bool) -> None:
    """Move the tested zip to ``output`` (a .zip) or unpack it into the folder ``output``; atomic per path."""
    if output.exists() and not overwrite:
        raise InputError(output, "exists; pass overwrite=True (--overwrite) to replace it")
    if output.suffix.lower() == ".zip":
        if output.is_dir():
            raise InputError(output, "is a folder; cannot replace it with a zip file")
        os.replace(package_zip, output)
        return
    unpacked = package_zip.parent / "unpacked"
    extract_zip(package_zip, unpacked)  # checks every entry; writes the rdf and the files it lists
    if output.exists():
        old = package_zip.parent / "previous"
        os.replace(output, old)  # removed with the staging folder
    os.replace(unpacked, output)


def export_model(checkpoint: str | Path, output: str | Path, *, test: bool = True, sample: np.ndarray | None = None,
                 name: str | None = None, description: str | None = None, sample_z: float = 0.5,
                 authors: Sequence[str | dict[str, Any]] | None = None, version: str = "0.1.0",
                 license: str = "MIT", tags: Sequence[str] | None = None,  # noqa: A002 - the rdf's field name
                 documentation: str | None = None, figures: Sequence[str | Path] = (),
                 maintainers: Sequence[str] = (), model_id: str | None = None, overwrite: bool = False) -> Path:
    """``RUN_DIR/final.pt`` -> a BioImage.IO package: a .zip file if ``output`` ends with .zip, else a folder.

    Parameters
    ----------
    checkpoint
        A training checkpoint (read with ``weights_only=True``).
    output
        ``NAME.zip`` or a folder (which will hold ``rdf.yaml`` and the files).
    test
        Run bioimageio.core's test on the package before writing it (the export refuses on any failed
        check or warning). ``False`` skips only that test; the runtime parity checks always run.
    sample
        Data for the test tensors, sample tensors and cover: a pair ``(2, Y, X)`` of neighbouring slices
        or a stack ``(Z, Y, X)`` (two slices around its middle, the one between as truth; ZAugNet-C: the
        K consecutive slices around its middle gap, edge slices repeated if it has fewer). Centre-cropped
        to a valid size of at most 256 x 256. Default: a simulated membrane phantom.
    name, description
        The rdf's name (letters, digits, ``_+- ()``) and short description; defaults per variant.
    sample_z
        ZAugNet+ and ZAugNet-C: the DPM value of the test and sample tensors (ZAugNet: always 0.5).
    authors
        Names or dicts (``name``, ``affiliation``, ``email``, ``orcid``; no ``github_user``: it needs the
        GitHub API). Default: the zaugnet project.
    version, license, tags
        The rdf's fields (``license`` an SPDX id; ``tags`` replace the defaults).
    documentation
        Extra markdown appended to the documentation's ``# Validation`` section (e.g. evaluation tables).
    figures
        Image files attached to the package and shown at the end of the documentation.
    maintainers
        GitHub user names. bioimageio.spec checks each on the GitHub API, so this needs the network.
        Without maintainers, bioimageio.spec warns that none is given (:data:`NO_MAINTAINER_WARNING`):
        that single warning is accepted, every other one refuses the export.
    model_id
        The rdf's ``id`` (lower-case letters, digits, ``_-./``); default :func:`model_id_from_name` of the name.
        deepImageJ 3.1 needs an id; the model zoo assigns its own on upload.
    overwrite
        Replace an existing ``output``.

    The rdf is written in the form deepImageJ 3.1 reads (:func:`jdll_compatible_rdf`) before bioimageio.core's
    test, so the test runs on exactly the package written.

    Returns
    -------
    Path
        ``output``.

    Raises
    ------
    InputError
        For a bad checkpoint, sample or output, a runtime disagreement, or a failed bioimageio test;
        nothing is written then.
    """
    output = check_package_output(output, overwrite)
    figure_paths = [Path(f) for f in figures]
    for f in figure_paths:
        _check_figure(f)
    state = load_checkpoint(checkpoint)
    config, generator = load_generator(checkpoint)
    with_dpm, n_slices = config.net.with_dpm, config.net.n_slices
    z = float(sample_z) if with_dpm else 0.5
    if not 0.0 < z < 1.0:
        raise InputError("sample_z", f"must lie strictly between 0 and 1, got {sample_z}")
    network = NormalizedStudent(generator.student.eval(), with_dpm, config.data.normalization,
                                config.data.percentiles, n_slices).eval()
    del generator  # the teacher is not exported
    names = channel_names(n_slices, with_dpm)
    window, truth, sample_source = _sample_window(sample, n_slices)
    if truth is not None and z != 0.5:
        truth, sample_source = None, sample_source.split(" (slice")[0]  # the middle slice is not at z
    test_input = _model_input(window, with_dpm, z)
    test_output = _predict(network, test_input)
    sample_error = (None if truth is None else
                    float(np.abs(test_output[0, 0] - truth).mean() / intensity_span(test_input)[0]))
    default_name, default_description, variant_text = get_variant(config.net.variant).texts(names)
    default_tags = DEFAULT_TAGS + get_variant(config.net.variant).tags
    author_list = author_dicts(authors)

    with staging(output) as tmp:
        stage = tmp / "files"
        torch.save(network.state_dict(), stage / FILES["state_dict"])
        (stage / FILE_NAME).write_text(architecture_source())
        save_torchscript(network, stage / FILES["torchscript"])
        _export_onnx(network, stage / FILES["onnx"], torch.from_numpy(test_input), opset=OPSET)
        checks = _check_runtimes(network, stage / FILES["torchscript"], stage / FILES["onnx"],
                                 _check_inputs(window, with_dpm))
        np.save(stage / FILES["test_input"], test_input)
        np.save(stage / FILES["test_output"], test_output)
        _write_tif(stage / FILES["sample_input"], test_input[0], "CYX")
        _write_tif(stage / FILES["sample_output"], test_output[0, 0], "YX")
        _write_cover(stage / FILES["cover"], window, test_output[0, 0])
        attached = attach_figures(figure_paths, stage)
        rdf_name = name or default_name
        rdf_id = model_id_from_name(rdf_name) if model_id is None else model_id
        (stage / FILES["documentation"]).write_text(_documentation(
            name=rdf_name, config=config, variant_text=variant_text, channel_names=names, checks=checks,
            history=list(state.get("history") or []), data_files=[str(d) for d in state.get("data") or []],
            sample_source=sample_source, sample_error=sample_error, extra=documentation, figures=attached,
            tested=test, model_id=rdf_id, z=z))
        tolerance_abs = float(TOLERANCE * intensity_span(test_input)[0])
        extra_config = {"checkpoint": {"step": int(state.get("step", 0)), "file": Path(checkpoint).name}}
        descr = describe(lambda: _build_description(
            stage, name=rdf_name, description=description or default_description, authors=author_list,
            version=version, license_id=license, tags=tags or default_tags, config=config,
            channel_names=names, checks=checks, tolerance_abs=tolerance_abs, attachments=attached,
            extra_config=extra_config, model_id=rdf_id, maintainers=maintainers), output, maintainers)
        package_and_place(descr, tmp, output, test=test, maintainers=maintainers, overwrite=overwrite)
    return output


# ------------------------------------------------------------------------------------ shared by both families
def check_package_output(output: str | Path, overwrite: bool) -> Path:
    """``output`` as a Path once it names a .zip or a folder (not another kind of file) that may be written."""
    output = Path(output)
    if output.suffix.lower() != ".zip" and output.name.lower().endswith(NOT_A_PACKAGE):
        raise InputError(output, "a package is written as a .zip file or a folder; this name ends like another "
                                 "kind of file")
    if output.exists() and not overwrite:
        raise InputError(output, "exists; pass overwrite=True (--overwrite) to replace it")
    return output


def author_dicts(authors: Sequence[str | dict[str, Any]] | None, default: str = "ZAugNet team") -> list[dict[str, Any]]:
    """The rdf's authors as dicts (a name alone becomes ``{"name": ...}``); a ``github_user`` is refused."""
    author_list = [{"name": a} if isinstance(a, str) else dict(a) for a in (authors or [default])]
    if any("github_user" in a for a in author_list):
        raise InputError("authors", "leave out github_user: validating it needs the GitHub API")
    return author_list


@contextmanager
def staging(output: Path) -> Iterator[Path]:
    """A temporary folder beside ``output`` holding an empty ``files/`` (the package's files are staged there),
    removed afterwards. Folders made for ``output`` are removed again if anything fails; an OSError (a
    read-only file system, a full disk) becomes an InputError naming ``output``."""
    created = [d for d in (output.parent, *output.parent.parents) if not d.exists()]
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(output, f"cannot be written ({err.strerror or err})") from None
    try:
        with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as tmp:
            (Path(tmp) / "files").mkdir()
            yield Path(tmp)
    except OSError as err:  # the staging folder beside the output: e.g. a read-only file system, a full disk
        _remove_empty(created)
        raise InputError(output, f"cannot be written ({err.strerror or err})") from None
    except BaseException:
        _remove_empty(created)
        raise


def describe(build: Callable[[], Any], output: Path, maintainers: Sequence[str]) -> Any:
    """``build()`` (a ``ModelDescr``); a field that is not valid, or a maintainer's GitHub name that cannot be
    verified (no network), becomes an InputError."""
    try:
        return build()
    except ValueError as err:  # pydantic's ValidationError: a field the user gave is not valid
        raise InputError(output, f"not a valid BioImage.IO description: {err}") from None
    except Exception as err:  # noqa: BLE001 - e.g. httpx.ConnectError: a maintainer's GitHub name unverifiable
        if not maintainers:
            raise
        raise InputError("maintainers", f"cannot verify the GitHub user names {list(maintainers)} "
                                        f"({err.__class__.__name__}: {err}); this needs the network") from None


def package_and_place(descr: Any, tmp: Path, output: Path, *, test: bool, maintainers: Sequence[str],
                      overwrite: bool) -> None:
    """Package ``descr`` with bioimageio.spec into ``tmp``, rewrite its rdf in deepImageJ's form
    (:func:`jdll_compatible_rdf`), run bioimageio.core's test on that zip (``test``; any failed check or warning
    but :data:`NO_MAINTAINER_WARNING` without maintainers refuses) and move it to ``output`` (:func:`_place`)."""
    from bioimageio.spec import save_bioimageio_package

    package_zip = tmp / "package.zip"
    save_bioimageio_package(descr, output_path=package_zip)
    _write_jdll_rdf(package_zip)  # what is tested below is what is written
    if test:
        outcome = run_bioimageio_test(package_zip, accept=() if maintainers else (NO_MAINTAINER_WARNING,))
        if not outcome.passed:
            raise InputError(output, "bioimageio.core test did not pass cleanly, nothing written:\n  "
                             + "\n  ".join(outcome.problems))
    try:
        _place(package_zip, output, overwrite)
    except OSError as err:
        raise InputError(output, f"cannot be written ({err.strerror or err})") from None


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove folders made for an output (deepest first) while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def attach_figures(figures: Sequence[Path], stage: Path) -> list[str]:
    """Copy the (checked) figures into ``stage`` as ``figure_<i>_<name>``; their file names."""
    attached = []
    for f in figures:
        target = f"figure_{len(attached)}_{f.name}"
        shutil.copyfile(f, stage / target)
        attached.append(target)
    return attached


def _check_figure(path: Path) -> None:
    """A ``--figure`` must be a PNG or JPEG file (the formats the model zoo shows)."""
    if not path.is_file():
        raise InputError(path, "figure not found")
    with open(path, "rb") as f:
        head = f.read(8)
    if not head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")):
        raise InputError(path, "a figure must be a PNG or JPEG image")
