"""Constants and helpers shared by the tests (importable as ``support``; fixtures live in conftest.py)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from zaugnet.training.checkpoint import save_checkpoint
from zaugnet.training.config import Config, build_config
from zaugnet.training.nets import Generator

#: The benchmark scripts (not a package: tests load them with :func:`benchmark_script`).
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

#: Real stacks beside the checkout (../shared/data); tests that need them skip when absent.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

#: A network small enough that a training step takes milliseconds on a CPU.
TINY = {
    "preset": "small",
    "net": {"block_widths": [16, 12, 8], "teacher_width": 8, "trunk_depth": 1, "context_width": 2,
            "unet_width": 2, "critic_width": 4},
    "data": {"crop_size": 32, "val_max_samples": 8},
    "train": {"batch_size": 2, "max_steps": 4, "checkpoint_every": 2},
}

#: The same as ``zaugnet train --set`` options.
TINY_SET = [
    "net.block_widths=[16,12,8]", "net.teacher_width=8", "net.trunk_depth=1", "net.context_width=2",
    "net.unet_width=2", "net.critic_width=4", "data.crop_size=32", "data.val_max_samples=8",
    "train.batch_size=2", "train.checkpoint_every=2",
]


def tiny_config(variant: str = "zaugnet", **train: object) -> Config:
    """The tiny test network with optional ``train`` overrides."""
    return build_config(TINY, {"net": {"variant": variant}, "train": dict(train)})



def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def unpack(package: Path, target: Path) -> Path:
    """A package zip unpacked (by zipfile itself) into ``target``."""
    with zipfile.ZipFile(package) as zf:
        zf.extractall(target)
    return target


def edit_rdf(folder: Path, edit: Callable[[dict[str, Any]], object]) -> None:
    """Apply ``edit`` to the parsed ``folder/rdf.yaml`` and write it back."""
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    edit(rdf)
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))


def listing(folder: Path) -> list[str]:
    """Every path under ``folder`` (to check that nothing was written)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def assert_bioimageio_test_passed(returncode: int, text: str) -> None:
    """The output of ``bioimageio test PACKAGE`` says: exit 0, status passed, no failed check, inference run
    for all three weight formats, and one warning only: the offline-unavoidable one about maintainers
    (a ``github_user`` needs the GitHub API), which the export accepts knowingly."""
    import re

    assert returncode == 0, text[-3000:]
    end = re.search(r"^Recommended Conda Environment", text, flags=re.M)
    table = text[text.index("bioimageio format validation"):end.start() if end else None]
    assert re.search(r"status\s+passed", table) and "\u274c" not in table, table[-3000:]
    assert not re.search(r"\bfailed\b", table, flags=re.I), table[-3000:]
    warnings = [line for line in table.splitlines() if "\u26a0" in line]
    assert len(warnings) == 1 and "Missing maintainers" in warnings[0], warnings
    for wf in ("onnx", "pytorch_state_dict", "torchscript"):
        assert f"Run {wf} inference for inputs with" in " ".join(table.split()), wf


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def benchmark_script(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` as a module (to call its ``main``)."""
    return _load(f"benchmark_{name}", BENCHMARKS / f"{name}.py")


def macro_generator() -> ModuleType:
    """Import ``fiji_macros/generate_macros.py`` as a module."""
    return _load("generate_macros", BENCHMARKS.parent / "fiji_macros" / "generate_macros.py")


def copying_checkpoint(path: Path) -> Path:
    """A checkpoint of the tiny ZAugNet whose student, whatever its other weights, returns slice_0 (the slice
    before the gap): each flow block's last layer gives no flow and a mask logit of +30 (so the blend is
    slice_0 alone), and the refinement U-Net's output layer a residual of 0."""
    cfg = tiny_config("zaugnet")
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in Generator(cfg.net).state_dict().items()}
    for i in range(3):
        state[f"student.blocks.{i}.last.weight"].zero_()
        state[f"student.blocks.{i}.last.bias"].copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 30.0]))
    state["student.unet.out.weight"].zero_()
    state["student.unet.out.bias"].zero_()
    return save_checkpoint(path, {"config": cfg.to_dict(), "generator": state, "step": 0})


def staircase(n: int = 17) -> np.ndarray:
    """uint16: each of five smooth images four times in a row, plus a little noise. Copying the slice before a
    gap is truly far better than any classical method at 2x and 4x. The self-check at 2x runs on ``[::2]``
    (slices in pairs, where the copy is right) and sees the model's margin grow from its 4x check (on
    ``[::4]``, which changes linearly image to image: linear wins there) to its 2x one: the model. The one at
    4x runs on ``[::4]`` alone (5 slices, no trend): linear."""
    yy, xx = np.mgrid[:32, :36]
    base = 2000 + 1500 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    step = 3000 + 40.0 * xx
    clean = np.stack([base + (i // 4) * step for i in range(n)])
    return np.rint(clean + np.random.default_rng(0).normal(0, 5, clean.shape)).astype(np.uint16)


def make_venv(base_python: str, env_dir: Path, requirements: Sequence[str], timeout: float) -> str | None:
    """Build a virtual environment at ``env_dir`` from ``base_python`` with ``requirements`` pip-installed; return
    ``None``, or the last line pip (or venv) printed on failure (the folder is then removed)."""
    shutil.rmtree(env_dir, ignore_errors=True)
    made = subprocess.run([base_python, "-m", "venv", str(env_dir)], capture_output=True, text=True)
    install = made.returncode == 0 and subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", *requirements],
        capture_output=True, text=True, timeout=timeout)
    if install and install.returncode == 0:
        return None
    shutil.rmtree(env_dir, ignore_errors=True)
    return " ".join((install.stderr if install else made.stderr).strip().splitlines()[-1:])


#: Seconds for one ImageJ 1.53t run (each deepImageJ stand-in call is one ``bioimageio predict``). A macro error
#: makes ImageJ show an error dialog (under Xvfb) and wait forever: the timeout ends such runs.
IMAGEJ_TIMEOUT = 150


def imagej_java(plugins: Path, tmp: Path) -> list[str]:
    """java with ImageJ's plugins.dir, a private java.io.tmpdir and user.home (ImageJ writes its preferences
    there), and, for the stand-in, the bioimageio executable and JDLL's classes."""
    tmp.mkdir(parents=True, exist_ok=True)
    cmd = ["xvfb-run", "-a", "java", f"-Dplugins.dir={plugins}", f"-Djava.io.tmpdir={tmp}", f"-Duser.home={tmp}",
           f"-Dzaugnet.bioimageio={Path(sys.executable).with_name('bioimageio')}"]
    if (plugins / "jdll.classpath").is_file():
        cmd.append(f"-Dzaugnet.jdll.classpath={(plugins / 'jdll.classpath').read_text()}")
    return cmd + ["-jar", "/usr/share/java/ij.jar"]


def imagej_communicate(cmd: list[str], tmp: Path) -> str:
    # own process group: on a timeout, xvfb-run, Xvfb and java are all stopped (killing xvfb-run alone orphans them)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=IMAGEJ_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"ImageJ did not finish within {IMAGEJ_TIMEOUT} s (an error dialog of the macro interpreter waits "
                    f"forever under Xvfb); output so far:\n{out}")
    return out


def run_imagej(macro: Path, args: str, plugins: Path, tmp: Path) -> str:
    """Run ``macro`` with ``args`` in ImageJ 1.53t (-batch, under Xvfb); return stdout + stderr.

    ``plugins`` is ImageJ's plugins.dir; ``tmp`` becomes java.io.tmpdir (where the macro keeps its files for
    deepImageJ), user.home and the working directory, so a test can check nothing is left behind.
    """
    return imagej_communicate(imagej_java(plugins, tmp) + ["-batch", str(macro), args], tmp)
