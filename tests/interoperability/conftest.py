"""Fixtures for the export / package / loader tests: packages exported once per session, a local HTTP server; for
the ImageJ tests (test_imagej.py, test_imagej_inprocess.py) ImageJ 1.53t, JDLL 0.6.1's rdf reader and the
compiled deepImageJ stand-in, the same for both."""

from __future__ import annotations

import fcntl
import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support import make_venv

from zaugnet.phantoms import simulate_stack

VARIANTS = ("zaugnet", "zaugnet+", "zaugnet-c")
ROOT = Path(__file__).resolve().parents[2]
#: Debian's ImageJ 1.53t (``apt-get install -y imagej``).
IJ_JAR = Path("/usr/share/java/ij.jar")
#: The bioimageio command line the deepImageJ stand-in runs.
BIOIMAGEIO = Path(sys.executable).with_name("bioimageio")
#: The test-only deepImageJ stand-in and the dialog closer (see imagej/DeepImageJ_Run.java).
STANDIN_SOURCES = (Path(__file__).resolve().parent / "imagej" / "DeepImageJ_Run.java",
                   Path(__file__).resolve().parent / "imagej" / "Dismiss_Dialogs.java")
#: JDLL 0.6.1's rdf reader (the sources deepImageJ 3.1 runs), and the jars it needs (Debian's).
JDLL_RDF = ROOT.parent / "shared" / "tools" / "jdll-rdf"
JDLL_JARS = (Path("/usr/share/java/snakeyaml.jar"), Path("/usr/share/java/gson.jar"))


def slug(variant: str) -> str:
    """A file-name-safe variant name."""
    return variant.replace("+", "_plus").replace("-", "_")


@pytest.fixture(scope="session")
def export_sample() -> np.ndarray:
    """A small uint16 phantom stack (3 x 64 x 96): the packages' test tensors and cover come from it (ZAugNet-C:
    slices 0, 1, 2, 2, the edge slice repeated)."""
    return simulate_stack((3, 64, 96), kind="membrane", seed=4)


@pytest.fixture(scope="session")
def packages(tiny_checkpoints: dict[str, Path], export_sample: np.ndarray,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``variant -> package.zip`` exported from the tiny checkpoints, bioimageio.core's test included."""
    from zaugnet.export import export_model

    out = tmp_path_factory.mktemp("packages")
    return {v: export_model(tiny_checkpoints[v], out / f"{slug(v)}.zip", sample=export_sample, sample_z=0.25)
            for v in VARIANTS}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def http_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """``(folder, base_url)``: a real HTTP server on 127.0.0.1 (port chosen by the OS) serving ``folder``."""
    folder = tmp_path_factory.mktemp("served")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def fiji_home() -> str:
    """FIJI_HOME (a Fiji.app with deepImageJ and its engines), or a skip saying what is missing."""
    fiji = os.environ.get("FIJI_HOME")
    if not fiji:
        pytest.skip("FIJI_HOME is not set: no Fiji.app with deepImageJ here (set FIJI_HOME=/path/to/Fiji.app "
                    "and pip install pyimagej to run the macros with the real deepImageJ)")
    if not Path(fiji).is_dir():
        pytest.fail(f"FIJI_HOME={fiji} is not a folder")
    pytest.importorskip("imagej", reason="pyimagej is not installed (pip install pyimagej)")
    return fiji


# ------------------------------------------------------------------------------------ ImageJ and the stand-in
@pytest.fixture(scope="session")
def imagej() -> Path:
    """ij.jar, or a skip naming what is missing (Debian: ``apt-get install -y imagej xvfb xauth``)."""
    missing = [what for what, ok in (
        (str(IJ_JAR), IJ_JAR.is_file()), ("java", shutil.which("java")), ("javac", shutil.which("javac")),
        ("xvfb-run", shutil.which("xvfb-run")), ("xauth", shutil.which("xauth")),
    ) if not ok]
    if missing:
        pytest.skip(f"ImageJ macro tests need {', '.join(missing)} "
                    "(Debian: apt-get install -y imagej xvfb xauth, with a JDK for javac)")
    if not BIOIMAGEIO.is_file():
        pytest.skip(f"the bioimageio command line is not beside this Python ({BIOIMAGEIO})")
    return IJ_JAR


@pytest.fixture(scope="session")
def jdll_classpath(imagej: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """JDLL 0.6.1's rdf reader compiled from ``../shared/tools/jdll-rdf/src`` (JDLL's own source files, see its
    README), as a class path for the stand-in; a skip where the tool or its jars are missing."""
    src = JDLL_RDF / "src"
    if not (src / "ReadRdf.java").is_file():
        pytest.skip(f"JDLL's rdf reader not found at {src} (the shared/ folder beside the checkout)")
    missing = [str(jar) for jar in JDLL_JARS if not jar.is_file()]
    if missing:
        pytest.skip(f"JDLL's reader needs {', '.join(missing)} (apt-get install -y libyaml-snake-java "
                    "libgoogle-gson-java)")
    classes = tmp_path_factory.mktemp("jdll") / "classes"
    done = subprocess.run(["javac", "-nowarn", "-proc:none", "-encoding", "UTF-8",
                           "-cp", os.pathsep.join(map(str, JDLL_JARS)), "-d", str(classes),
                           *sorted(map(str, src.rglob("*.java")))], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    shutil.copy(src / "supportedVersions.json", classes)
    return os.pathsep.join([str(classes), *map(str, JDLL_JARS)])


@pytest.fixture(scope="session")
def standin(imagej: Path, jdll_classpath: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plugins.dir whose ``plugins/`` holds the compiled test-only ``DeepImageJ_Run`` (stands in for deepImageJ,
    reading rdfs with JDLL's reader) and ``Dismiss_Dialogs``; ``jdll.classpath`` beside it names JDLL's classes."""
    root = tmp_path_factory.mktemp("dij_standin")
    (root / "plugins").mkdir()
    done = subprocess.run(["javac", "-cp", str(imagej), "-d", str(root / "plugins"), *map(str, STANDIN_SOURCES)],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (root / "plugins" / "DeepImageJ_Run.class").is_file()
    (root / "jdll.classpath").write_text(jdll_classpath)
    return root


#: deepImageJ 3.1's TorchScript engine is libtorch 2.0.0; the package index offers torch 2.0.1 (its CUDA build,
#: which also runs on a CPU: about 2.2 GB with its NVIDIA packages, 4.4 GB installed) for this Python.
OLD_TORCH = "2.0.1"
OLD_TORCH_ENV = Path(sys.prefix) / "zaugnet-old-runtimes" / f"torch-{OLD_TORCH}"


@pytest.fixture(scope="session")
def old_torch() -> Path:
    """The python of a virtual environment with torch 2.0.1 (built on first use, a few minutes, and kept beside
    this project's environment; one builder at a time), or ``ZAUGNET_OLD_TORCH_PYTHON`` if set."""
    if os.environ.get("ZAUGNET_OLD_TORCH_PYTHON"):
        return Path(os.environ["ZAUGNET_OLD_TORCH_PYTHON"])
    python, done = OLD_TORCH_ENV / "bin" / "python", OLD_TORCH_ENV / ".complete"
    OLD_TORCH_ENV.parent.mkdir(parents=True, exist_ok=True)
    with open(OLD_TORCH_ENV.parent / f"torch-{OLD_TORCH}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test worker may be building it
        if done.is_file():
            return python
        failure = make_venv(sys.executable, OLD_TORCH_ENV, [f"torch=={OLD_TORCH}", "numpy<2"], timeout=1800)
        if failure is not None:
            pytest.skip(f"could not install torch {OLD_TORCH} (deepImageJ's TorchScript engine is libtorch 2.0.0): "
                        f"{failure}")
        done.write_text(OLD_TORCH + "\n")
    return python
