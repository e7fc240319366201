"""ONNX export of the packaged network, for onnxruntime and deepImageJ's onnxruntime-java 1.13.

The legacy (TorchScript-based) exporter traces the network; :mod:`zaugnet.training.nets` keeps its
padding and sampling-grid arithmetic on the input's shape while traced, so the graph has dynamic
batch, y and x. The file must stay readable by old runtimes: opset 16-18 (``GridSample`` needs 16)
and ONNX IR version at most 8.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from zaugnet.errors import InputError

from .parity import relative_error

#: Opset written; GridSample (bilinear, border, align_corners) exists from opset 16.
OPSET = 17
OPSET_RANGE = (16, 18)
#: Highest ONNX IR version onnxruntime-java 1.13 (deepImageJ) reads.
MAX_IR_VERSION = 8
INPUT_NAME, OUTPUT_NAME = "input", "output"


def export_onnx(network: nn.Module, path: str | Path, example: torch.Tensor, *, opset: int = OPSET,
                input_names: Sequence[str] = (INPUT_NAME,), output_names: Sequence[str] = (OUTPUT_NAME,)) -> Path:
    """Write ``network`` (traced on ``example``) as ONNX with every axis but the channel axis dynamic.

    ``(batch, channel, y, x)`` (ZAugNet) or ``(batch, channel, z, y, x)`` (ZS-DeconvNet) tensors; one input
    and one or more outputs (``output_names``), all with the input's axes. The IR version is lowered to
    :data:`MAX_IR_VERSION` when the exporter wrote a newer one (the operators of opset <= 18 are all defined
    in IR 8).
    """
    import onnx

    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise ValueError(f"opset must be in {OPSET_RANGE}, got {opset}")
    path = Path(path)
    axes = dict(zip([0, *range(2, example.ndim)], ["batch", *"zyx"[5 - example.ndim:]]))
    with warnings.catch_warnings():
        # the exporter's notes that the legacy path is deprecated: it is chosen on purpose (IR <= 8)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message="The feature will be removed.*")
        torch.onnx.export(network.eval(), (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes={n: axes for n in (*input_names, *output_names)}, do_constant_folding=True)
    model = onnx.load(str(path))
    if model.ir_version > MAX_IR_VERSION:
        model.ir_version = MAX_IR_VERSION
        onnx.save(model, str(path))
    onnx.checker.check_model(model)
    return path


def onnx_versions(path: str | Path) -> tuple[int, int]:
    """``(ir_version, default-domain opset)`` of an ONNX file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return int(model.ir_version), int(opset)


def onnx_session(path: str | Path):  # noqa: ANN201 - onnxruntime.InferenceSession
    """An onnxruntime CPU session for ``path``."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - any decoding failure: not a usable model
        raise InputError(path, f"not a loadable ONNX model ({err.__class__.__name__}: {err})") from None


def run_onnx(session, batch: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """Run an onnxruntime session on one float32 ``(B, C, Y, X)`` batch (its first output)."""
    return run_onnx_all(session, batch)[0]


def run_onnx_all(session, batch: np.ndarray) -> list[np.ndarray]:  # noqa: ANN001
    """Every output of an onnxruntime session on one float32 batch, in the model's order."""
    name = session.get_inputs()[0].name
    return list(session.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)}))


def network_outputs(network: nn.Module, batch: np.ndarray) -> list[np.ndarray]:
    """``network`` (eager or TorchScript) on one float32 batch, without gradients: its output(s) as a list."""
    with torch.no_grad():
        out = network(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
    return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]


#: ``error(got, want, batch)``: how far a runtime's outputs (one array per output) are from the network's.
ErrorMeasure = Callable[[Sequence[np.ndarray], Sequence[np.ndarray], np.ndarray], float]


def max_relative_error(got: Sequence[np.ndarray], want: Sequence[np.ndarray], batch: np.ndarray) -> float:
    """ZAugNet's measure (:func:`.parity.relative_error`) over every output; ``inf`` if a shape differs."""
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want)):
        return float("inf")
    return max(relative_error(g, w, batch) for g, w in zip(got, want))


def check_onnx(path: str | Path, reference: nn.Module, inputs: Sequence[np.ndarray], tolerance: float,
               error: ErrorMeasure = max_relative_error) -> list[float]:
    """Run the ONNX file in onnxruntime on each input and compare with ``reference`` (every output).

    Returns the error of each input by ``error`` (default: max abs error relative to the input's intensity
    range, see :mod:`.parity`).

    Raises
    ------
    InputError
        If the versions are outside what deepImageJ reads, a run fails, or an error exceeds ``tolerance``.
    """
    ir, opset = onnx_versions(path)
    if ir > MAX_IR_VERSION or not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise InputError(path, f"ONNX IR {ir} / opset {opset}: need IR <= {MAX_IR_VERSION} and opset in {OPSET_RANGE}")
    session = onnx_session(path)
    errors = []
    for batch in inputs:
        try:
            got = run_onnx_all(session, batch)
        except Exception as err:  # noqa: BLE001 - report which size failed
            raise InputError(path, f"onnxruntime failed on an input of shape {batch.shape}: {err}") from None
        err = error(got, network_outputs(reference, batch), batch)
        if not err <= tolerance:
            raise InputError(path, f"onnxruntime output differs from the network on shape {batch.shape}: "
                                   f"max error {err:.3g} of the intensity range > {tolerance:g}")
        errors.append(err)
    return errors
