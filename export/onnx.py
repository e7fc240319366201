"""ONNX export of the packaged network, for onnxruntime and deepImageJ's onnxruntime-java 1.13.

The legacy (TorchScript-based) exporter traces the network; :mod:`zaugnet.training.nets` keeps its
padding and sampling-grid arithmetic on the input's shape while traced, so the graph has dynamic
batch, y and x. The file must stay readable by old runtimes: opset 16-18 (``GridSample`` needs 16)
and ONNX IR version at most 8.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
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


def export_onnx(network: nn.Module, path: str | Path, example: torch.Tensor, *, opset: int = OPSET) -> Path:
    """Write ``network`` (traced on ``example``) as ONNX with dynamic batch, y and x.

    The IR version is lowered to :data:`MAX_IR_VERSION` when the exporter wrote a newer one (the
    operators of opset <= 18 are all defined in IR 8).
    """
    import onnx

    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise ValueError(f"opset must be in {OPSET_RANGE}, got {opset}")
    path = Path(path)
    axes = {0: "batch", 2: "y", 3: "x"}
    with warnings.catch_warnings():
        # the exporter's notes that the legacy path is deprecated: it is chosen on purpose (IR <= 8)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message="The feature will be removed.*")
        torch.onnx.export(network.eval(), (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes}, do_constant_folding=True)
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
    """Run an onnxruntime session on one float32 ``(B, C, Y, X)`` batch."""
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def check_onnx(path: str | Path, reference: nn.Module, inputs: Sequence[np.ndarray], tolerance: float) -> list[float]:
    """Run the ONNX file in onnxruntime on each input and compare with ``reference``.

    Returns the max abs error of each input relative to its intensity range (see :mod:`.parity`).

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
            got = run_onnx(session, batch)
        except Exception as err:  # noqa: BLE001 - report which size failed
            raise InputError(path, f"onnxruntime failed on an input of shape {batch.shape}: {err}") from None
        with torch.no_grad():
            want = reference(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()
        err = relative_error(got, want, batch) if got.shape == want.shape else float("inf")
        if not err <= tolerance:
            raise InputError(path, f"onnxruntime output differs from the network on shape {batch.shape}: "
                                   f"max error {err:.3g} of the intensity range > {tolerance:g}")
        errors.append(err)
    return errors
