"""The shipped packages' ONNX weights in the runtime deepImageJ 3.1 uses: onnxruntime 1.12.1 (JDLL's ONNX
engine is onnxruntime-java 1.12.1), in an isolated virtual environment made by the test set-up.

onnxruntime 1.12.1 has wheels for Python 3.10 at the newest, so the environment is built with a Python 3.10
from the PATH or pyenv (about 10 s, once; kept beside this project's own environment). Where none is found
or the install fails, the test skips with that reason. Their TorchScript weights in the torch deepImageJ's
TorchScript engine matches (libtorch 2.0.0; torch 2.0.1 from the package index, the ``old_torch`` fixture of
conftest.py, about 2.2 GB to download once).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from support import make_venv
from zaugnet.export.load import SHIPPED_MODELS

ORT_VERSION = "1.12.1"
#: Kept with the project's environment (``make clean`` removes it), reused by later runs.
ENV_DIR = Path(sys.prefix) / "zaugnet-old-runtimes" / f"onnxruntime-{ORT_VERSION}"

RUN_TORCHSCRIPT = """
import sys
import numpy as np
import torch
network = torch.jit.load(sys.argv[1], map_location="cpu").eval()
with torch.no_grad():
    np.save(sys.argv[3], network(torch.from_numpy(np.load(sys.argv[2]))).numpy())
print(torch.__version__)
"""

RUN = """
import sys
import numpy as np
import onnxruntime
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
x = np.load(sys.argv[2])
y = session.run(None, {session.get_inputs()[0].name: x})[0]
np.save(sys.argv[3], y)
print(onnxruntime.__version__)
"""


def _python310() -> str | None:
    """A working Python 3.10 (pyenv's shims answer for versions that are not selected, so each is tried)."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python")))
    candidates += [p for p in [shutil.which("python3.10")] if p]
    for python in candidates:
        probe = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2] == (3, 10))"],
                               capture_output=True, text=True)
        if probe.stdout.strip() == "True":
            return python
    return None


@pytest.fixture(scope="module")
def old_onnxruntime() -> Path:
    """The python of a virtual environment with onnxruntime 1.12.1 (built on first use)."""
    python = ENV_DIR / "bin" / "python"
    if python.is_file():
        return python
    base = _python310()
    if base is None:
        pytest.skip(f"onnxruntime {ORT_VERSION} needs Python 3.10, and none was found (python3.10 or pyenv)")
    failure = make_venv(base, ENV_DIR, [f"onnxruntime=={ORT_VERSION}", "numpy<2"], timeout=600)
    if failure is not None:
        pytest.skip(f"could not install onnxruntime {ORT_VERSION} for Python 3.10: {failure}")
    return python


def _run_shipped_weights(name: str, weight_format: str, python: Path, script: str, tmp_path: Path) -> str:
    """Run package ``name``'s test input through its ``weight_format`` weights with ``script`` in ``python``, assert
    the package's test output within its reproducibility tolerance, and return the script's last output line (the
    runtime's version)."""
    package = SHIPPED_MODELS / name
    rdf = yaml.safe_load((package / "rdf.yaml").read_text())
    weights = package / rdf["weights"][weight_format]["source"]
    test_input = package / rdf["inputs"][0]["test_tensor"]["source"]
    expected = np.load(package / rdf["outputs"][0]["test_tensor"]["source"])
    tolerance = rdf["config"]["bioimageio"]["reproducibility_tolerance"][0]["absolute_tolerance"]
    out = tmp_path / "out.npy"
    run = subprocess.run([str(python), "-c", script, str(weights), str(test_input), str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = np.load(out)
    assert got.shape == expected.shape
    error = float(np.max(np.abs(got - expected)))
    assert error <= tolerance, (name, error, tolerance)
    return run.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("name", ["zaugnet", "zaugnet_plus", "zaugnet_c"])
def test_shipped_onnx_weights_run_in_deepimagej_s_onnxruntime(name: str, old_onnxruntime: Path,
                                                              tmp_path: Path) -> None:
    """The package's test input through its ONNX weights in onnxruntime 1.12.1 gives its test output
    within the package's own reproducibility tolerance."""
    assert _run_shipped_weights(name, "onnx", old_onnxruntime, RUN, tmp_path) == ORT_VERSION


@pytest.mark.parametrize("name", ["zaugnet", "zaugnet_plus", "zaugnet_c"])
def test_shipped_torchscript_weights_run_in_deepimagej_s_torch(name: str, old_torch: Path, tmp_path: Path) -> None:
    """The package's test input through its TorchScript weights in torch 2.0.1 gives its test output within the
    package's reproducibility tolerance (deepImageJ tries TorchScript after ONNX and the state dict)."""
    assert _run_shipped_weights(name, "torchscript", old_torch, RUN_TORCHSCRIPT, tmp_path).startswith("2.0.")
