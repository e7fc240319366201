"""ImageJ driven IN-PROCESS from Python through scyjava / JPype (what pyimagej is built on), against
``zaugnet predict``.

``test_imagej.py`` runs the macros as separate ``java -jar ij.jar -batch`` programs that talk through TIFF files.
Here ImageJ runs inside a Python process, as a pyimagej user's script would:

- a numpy stack becomes an ImagePlus in memory (a Byte/Short/FloatProcessor per slice, its calibration set from
  the voxel size), shown as the current image of an ImageJ 1.53t started in that process
  (``new ImageJ(ImageJ.NO_SHOW)``: ImageJ with a main window, not shown, under Xvfb);
- our macro runs on it (``IJ.runMacroFile(fiji_macros/zaugnet.ijm, "model=... factor=...")``, no ``input=``, no
  ``output=``; ``zaugnet_plus.ijm`` too), on the shipped packages in ``bioimageio_models/``, so the macro leaves
  its result open as a new image, as in a user's Fiji;
- that ImagePlus is read back into numpy, pixels and calibration, and compared in the test with
  ``zaugnet predict --method model --weight-format onnx`` on the same stack: the same shape and dtype,
  the original slices identical, the new ones within the packages' export tolerance (1e-4 of the intensity
  range, plus 1 for integer rounding), the voxel depth divided by the factor, x/y size and unit kept, the input
  image still open and unchanged. A macro error (its dialog would wait forever) ends the run with its text.

deepImageJ itself cannot be installed here; ``DeepImageJ Run`` is answered by the test-only stand-in
``imagej/DeepImageJ_Run.java``, compiled by the same fixtures as for test_imagej.py (``standin`` and
``jdll_classpath`` in conftest.py), and started with the same ``-Dzaugnet.jdll.classpath``: in this JVM too it
reads the rdf with JDLL 0.6.1's own reader first (so it refuses what deepImageJ 3.1 refuses: a test below), picks
the weights in JDLL's order (our packages: ONNX) and runs the real ``bioimageio predict`` on the same shipped
package with them. See test_imagej.py.

JPype starts one JVM per process and cannot restart it, and ImageJ's AWT threads outlive a test, so each case
runs in its own Python process: this file run as a script (``python test_imagej_inprocess.py REQUEST.json``),
under ``xvfb-run -a`` (ImageJ 1.53t refuses ``run(...)`` without a display). Arrays travel between the test and
that process as ``.npy`` / ``.npz`` files; inside it the stack goes into ImageJ and the result comes out in
memory (no TIFF of the stack or of the result; the macro's own temporary pair files for deepImageJ aside).

Opt-in: with ``FIJI_HOME`` (a Fiji.app with deepImageJ and its PyTorch engine) and pyimagej installed,
the same script starts that Fiji with ``imagej.init(FIJI_HOME, mode="interactive")`` from INSIDE that folder
(deepImageJ looks for its ``engines/`` relative to the working directory) and runs the macro with the real
deepImageJ; it skips, saying so, elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.imagej

ROOT = Path(__file__).resolve().parents[2]
THIS = Path(__file__).resolve()
MACROS = ROOT / "fiji_macros"
SHIPPED = ROOT / "bioimageio_models"
IJ_JAR = Path("/usr/share/java/ij.jar")
BIOIMAGEIO = Path(sys.executable).with_name("bioimageio")
#: The weights the stand-in runs (JDLL's first choice for our packages) and the reference uses.
WEIGHT_FORMAT = "onnx"
#: Seconds the worker process may take before it reports what it has (the ImageJ log, open dialogs) and exits;
#: each deepImageJ call costs one ``bioimageio predict`` run, about 4 s on 2 cores.
WORKER_DEADLINE = 240
#: Seconds after which the test kills the worker (and its Xvfb) if it did not stop itself.
KILL_AFTER = WORKER_DEADLINE + 60
#: The voxel size (z, y, x) in micrometres given to ImageJ and to zaugnet predict.
VOXEL = (0.6, 0.2, 0.2)
UNIT = "\u00b5m"  # ImageJ's own spelling; zaugnet reads it as "um"


# ==================================================================================== the worker (own process)
# Everything from here to "the tests" runs in the worker process only; it imports scyjava / pyimagej lazily.

def _java_classes() -> dict[str, Any]:
    import jpype
    from scyjava import jimport

    names = ("ij.IJ", "ij.ImageJ", "ij.ImagePlus", "ij.ImageStack", "ij.WindowManager", "ij.process.ByteProcessor",
             "ij.process.ShortProcessor", "ij.process.FloatProcessor")
    classes = {name.rsplit(".", 1)[1]: jimport(name) for name in names}
    classes["jpype"] = jpype
    return classes


def to_imageplus(data: np.ndarray, title: str, voxel: tuple[float, float, float], unit: str, j: dict) -> Any:
    """A (Z, Y, X) uint8 / uint16 / float32 numpy stack as an ImageJ ImagePlus (one z-stack, no channels or
    frames), copied slice by slice into ImageJ's own pixel arrays; its calibration holds ``voxel`` (z, y, x)."""
    jpype = j["jpype"]
    z, h, w = data.shape
    stack = j["ImageStack"](w, h)
    for plane in data:
        flat = np.ascontiguousarray(plane).ravel()
        if data.dtype == np.uint8:  # Java's bytes and shorts are signed: the same bits
            ip = j["ByteProcessor"](w, h, jpype.JArray(jpype.JByte)(flat.view(np.int8)))
        elif data.dtype == np.uint16:
            ip = j["ShortProcessor"](w, h, jpype.JArray(jpype.JShort)(flat.view(np.int16)), None)
        elif data.dtype == np.float32:
            ip = j["FloatProcessor"](w, h, jpype.JArray(jpype.JFloat)(flat))
        else:
            raise TypeError(f"ImageJ has no {data.dtype} images")
        stack.addSlice(ip)
    imp = j["ImagePlus"](title, stack)
    imp.setDimensions(1, z, 1)
    cal = imp.getCalibration()
    cal.pixelDepth, cal.pixelHeight, cal.pixelWidth = voxel
    cal.setUnit(unit)
    return imp


def from_imageplus(imp: Any) -> np.ndarray:
    """An ImagePlus's pixels as a (slices, Y, X) numpy array of its bit depth (8: uint8, 16: uint16, 32: float32)."""
    signed = {8: np.int8, 16: np.int16, 32: np.float32}[int(imp.getBitDepth())]
    unsigned = {8: np.uint8, 16: np.uint16, 32: np.float32}[int(imp.getBitDepth())]
    stack = imp.getStack()
    h, w = int(imp.getHeight()), int(imp.getWidth())
    planes = [np.frombuffer(memoryview(stack.getPixels(i)), dtype=signed).view(unsigned).reshape(h, w).copy()
              for i in range(1, int(stack.getSize()) + 1)]
    return np.stack(planes)


def _calibration(imp: Any) -> dict[str, Any]:
    cal = imp.getCalibration()
    return {"x": float(cal.pixelWidth), "y": float(cal.pixelHeight), "z": float(cal.pixelDepth),
            "unit": str(cal.getUnit())}


def _dialog_texts() -> list[str]:
    """Title and text of each open AWT/Swing dialog: a macro error in ImageJ with a window shows one (a
    ``MessageDialog``) and waits for a click that never comes."""
    from scyjava import jimport

    label = jimport("ij.gui.MultiLineLabel")
    lines = label.class_.getDeclaredField("lines")  # its text has no getter
    lines.setAccessible(True)
    texts = []
    for window in jimport("java.awt.Window").getWindows():
        if not window.isShowing() or not isinstance(window, jimport("java.awt.Dialog")):
            continue
        parts, todo = [str(window.getTitle())], list(window.getComponents())
        while todo:
            comp = todo.pop(0)
            try:
                if isinstance(comp, label):
                    parts.extend(str(line) for line in (lines.get(comp) or []))
                elif hasattr(comp, "getText") and not isinstance(comp, jimport("java.awt.Button")):
                    parts.append(str(comp.getText()))
            except Exception as err:  # noqa: BLE001 - best-effort diagnostics
                parts.append(f"({err.__class__.__name__})")
            if hasattr(comp, "getComponents"):
                todo.extend(comp.getComponents())
        texts.append(" | ".join(p for p in parts if p and p != "None"))
    return texts


def _text_windows() -> dict[str, str]:
    """Title -> text of each of ImageJ's open text windows (its "Exception" window holds a command's stack trace)."""
    from scyjava import jimport

    text_window = jimport("ij.text.TextWindow")
    return {str(w.getTitle()): str(w.getTextPanel().getText() or "")
            for w in jimport("ij.WindowManager").getNonImageWindows() or [] if isinstance(w, text_window)}


def _watchdog(deadline: float, j: dict) -> None:
    """End the process (exit 3) printing the ImageJ log and the dialogs as soon as a dialog opens (nothing
    would close it) or after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        time.sleep(0.5)
        try:
            dialogs = _dialog_texts()
        except Exception as err:  # noqa: BLE001
            dialogs = [f"(cannot list the dialogs: {err!r})"]
        if dialogs or time.monotonic() > end:
            break
    time.sleep(0.5)  # let the dialog's text settle
    try:
        report = {"dialogs": _dialog_texts() or dialogs, "log": str(j["IJ"].getLog() or ""),
                  "text_windows": _text_windows()}
    except Exception as err:  # noqa: BLE001
        report = {"dialogs": dialogs, "error": repr(err)}
    reason = "a dialog opened" if report["dialogs"] else f"no result after {deadline} s"
    print(f"worker: stopped, {reason}: " + json.dumps(report), flush=True)
    os._exit(3)


def _start_standin(req: dict) -> dict:
    import scyjava

    scyjava.config.set_java_constraints(fetch="never")  # the system JDK; never download one
    scyjava.config.add_classpath(req["ij_jar"])
    # the same system properties as test_imagej.py's ImageJ processes: JDLL's reader comes in through
    # zaugnet.jdll.classpath (the stand-in loads it into this JVM), as there
    for option in (f"-Dplugins.dir={req['plugins_dir']}", f"-Djava.io.tmpdir={req['tmp']}", f"-Duser.home={req['tmp']}",
                   f"-Dzaugnet.bioimageio={req['bioimageio']}", f"-Dzaugnet.jdll.classpath={req['jdll_classpath']}"):
        scyjava.config.add_option(option)
    scyjava.start_jvm()
    j = _java_classes()
    j["ImageJ"](j["ImageJ"].NO_SHOW)  # ImageJ with its (hidden) main window: macros run as in a user's Fiji
    return j


def _start_fiji(req: dict) -> dict:
    import imagej  # pyimagej: the opt-in path only
    import scyjava

    scyjava.config.set_java_constraints(fetch="auto")  # Fiji's own Java where it is found, the system's otherwise
    scyjava.config.add_option(f"-Djava.io.tmpdir={req['tmp']}")
    scyjava.config.add_option("-Dimagej.updater.disableAutocheck=true")  # no update dialog at start-up
    os.chdir(req["fiji_home"])  # deepImageJ finds its engines/ relative to the working directory
    ij = imagej.init(req["fiji_home"], mode="interactive")
    j = _java_classes()
    if j["IJ"].getInstance() is None:
        ij.ui().showUI()  # ImageJ 1's main window (under Xvfb): the macro leaves its result open
    return j


def worker(request: Path) -> int:
    """Start ImageJ in this process, put the request's stack in as an ImagePlus, run the macro, write the
    result ImagePlus (and the input after the run) back as numpy. Prints what it does; 0 when the macro ran."""
    req = json.loads(request.read_text())
    result = Path(req["result"])
    started = time.monotonic()
    j = _start_fiji(req) if req["backend"] == "fiji" else _start_standin(req)
    threading.Thread(target=_watchdog, args=(req["deadline"], j), daemon=True).start()
    IJ, WindowManager = j["IJ"], j["WindowManager"]
    print(f"worker: ImageJ {IJ.getVersion()} started in {time.monotonic() - started:.1f} s", flush=True)

    data = np.load(req["stack"])
    imp = to_imageplus(data, req["title"], tuple(req["voxel"]), req["unit"], j)
    imp.show()  # the current image of the macro
    assert WindowManager.getCurrentImage() == imp
    t0 = time.monotonic()
    returned = IJ.runMacroFile(req["macro"], req["args"])  # on this (the main) thread, as pyimagej's run_macro
    seconds = time.monotonic() - t0
    print(f"worker: macro returned {returned!r} after {seconds:.1f} s", flush=True)

    out = WindowManager.getCurrentImage()
    titles = [str(WindowManager.getImage(i).getTitle()) for i in WindowManager.getIDList() or []]
    report = {"macro_seconds": seconds, "returned": None if returned is None else str(returned),
              "log": str(IJ.getLog() or ""), "titles": titles, "dialogs": _dialog_texts(),
              "input": {"title": str(imp.getTitle()), "calibration": _calibration(imp),
                        "changes": bool(imp.changes)}}
    arrays = {"input_after": from_imageplus(imp)}
    if out is not None and out != imp:
        report["output"] = {"title": str(out.getTitle()), "calibration": _calibration(out),
                            "dims": [int(out.getNChannels()), int(out.getNSlices()), int(out.getNFrames())],
                            "bit_depth": int(out.getBitDepth())}
        arrays["output"] = from_imageplus(out)
    np.savez(result, **arrays)
    result.with_suffix(".json").write_text(json.dumps(report))
    print("worker: done", flush=True)
    return 0


# ==================================================================================== the tests
@pytest.fixture(scope="session")
def inprocess_standin(standin: Path) -> Path:
    """conftest's ``standin`` (the compiled stand-in; ``jdll.classpath`` beside it names JDLL's compiled reader),
    or a skip naming what is missing; the in-process run also needs scyjava and JPype."""
    for module in ("scyjava", "jpype"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[test]')")
    assert (standin / "jdll.classpath").read_text()
    return standin


def run_worker(req: dict[str, Any], data: np.ndarray, tmp: Path, cwd: Path | None = None,
               expect: int = 0) -> tuple[dict, dict]:
    """Run :func:`worker` on ``data`` in its own Python process under ``xvfb-run -a``; return (report, arrays).
    ``expect``: the worker's exit status (3: it stopped on a dialog; then the report holds only its output)."""
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "stack.npy", data)
    req = {**req, "stack": str(tmp / "stack.npy"), "result": str(tmp / "result.npz"), "tmp": str(tmp),
           "deadline": WORKER_DEADLINE}
    (tmp / "request.json").write_text(json.dumps(req))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))}
    # its own process group: on a timeout xvfb-run, Xvfb and the worker are stopped together
    proc = subprocess.Popen(["xvfb-run", "-a", sys.executable, str(THIS), str(tmp / "request.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd or tmp,
                            env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=KILL_AFTER)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the ImageJ worker did not finish within {KILL_AFTER} s; output so far:\n{out}")
    assert proc.returncode == expect, f"worker exited with {proc.returncode}, not {expect}:\n{out}"
    if expect != 0:
        return {"stdout": out}, {}
    assert (tmp / "result.json").is_file(), out
    report = json.loads((tmp / "result.json").read_text())
    report["stdout"] = out
    with np.load(tmp / "result.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    return report, arrays


def reference(data: np.ndarray, package: Path, options: list[str], tmp: Path) -> Any:
    """``zaugnet predict`` on ``data`` (written as an ImageJ TIFF with :data:`VOXEL`), read back as a Stack."""
    from zaugnet.cli import main
    from zaugnet.io.tiff import VoxelSize, read_stack, write_stack

    source, target = tmp / "reference_input.tif", tmp / "reference.tif"
    write_stack(source, data, "ZYX", VoxelSize(*VOXEL, "um"))
    assert main(["predict", str(source), "-o", str(target), "--model", str(package), "--method", "model",
                 "--weight-format", WEIGHT_FORMAT, *options, "--quiet", "--device", "cpu"]) == 0
    return read_stack(target, min_slices=2)


def check_parity(report: dict, arrays: dict, data: np.ndarray, ref: Any, step: int, title: str) -> None:
    """The result ImagePlus (as numpy) against ``zaugnet predict`` and the input; calibration round trip."""
    from zaugnet.export.parity import TOLERANCE

    assert "output" in arrays, report["stdout"] + report["log"]
    got, want = arrays["output"], ref.data
    n = data.shape[0]
    assert got.shape == want.shape == ((n - 1) * step + 1, *data.shape[1:])
    assert got.dtype == want.dtype == data.dtype
    assert report["output"]["dims"] == [1, got.shape[0], 1]  # a z-stack, not channels or frames
    assert report["output"]["bit_depth"] == {np.uint8: 8, np.uint16: 16, np.float32: 32}[data.dtype.type]
    np.testing.assert_array_equal(got[::step], data)  # original slices copied exactly
    new = np.ones(got.shape[0], bool)
    new[::step] = False
    span = float(data.max()) - float(data.min())
    integer = np.issubdtype(data.dtype, np.integer)
    diff = np.abs(got[new].astype(np.float64) - want[new].astype(np.float64))
    assert diff.max() <= TOLERANCE * span + (1 if integer else 0), (diff.max(), span)
    assert float(np.std(got[new])) > 0  # real predictions, not empty slices
    # calibration: in memory (ImageJ) and in zaugnet's TIFF
    cal = report["output"]["calibration"]
    assert cal["z"] == pytest.approx(VOXEL[0] / step, rel=1e-6)
    assert (cal["y"], cal["x"]) == pytest.approx(VOXEL[1:], rel=1e-9)
    assert cal["unit"] == UNIT
    assert (ref.voxel_size.z, ref.voxel_size.y, ref.voxel_size.x) == pytest.approx((cal["z"], cal["y"], cal["x"]),
                                                                                   rel=1e-5)
    # the input image: still open, pixels and calibration unchanged
    np.testing.assert_array_equal(arrays["input_after"], data)
    assert report["input"]["calibration"] == {"z": VOXEL[0], "y": VOXEL[1], "x": VOXEL[2], "unit": UNIT}
    assert report["titles"] == [title, report["output"]["title"]], report["titles"]


def _calls(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("DeepImageJ Run (test stand-in): ")]


def _stack(kind: str, shared: Path) -> np.ndarray:
    """The cases' stacks: a crop of a real stack where ../shared/data has it (else a synthetic stand-in of the
    same size and dtype), synthetic nuclei otherwise."""
    from zaugnet.phantoms import simulate_stack

    steps = {"z_step_um": VOXEL[0], "xy_step_um": VOXEL[1]}
    if kind == "real16":
        path = shared / "mitograph_yeast_mito_test001.tif"
        if path.is_file():
            from zaugnet.io.tiff import read_stack

            full = read_stack(path).data[18:22]  # 4 slices of yeast mitochondria
            y0, x0 = (full.shape[1] - 64) // 2, (full.shape[2] - 64) // 2
            return np.ascontiguousarray(full[:, y0:y0 + 64, x0:x0 + 64]).astype(np.uint16)
        return simulate_stack((4, 64, 64), kind="membrane", seed=3, **steps)
    if kind == "float32_40x50":
        return simulate_stack((2, 40, 50), kind="nuclei", seed=5, dtype="float32", **steps)
    if kind == "uint8":
        return simulate_stack((2, 32, 48), kind="nuclei", seed=8, dtype="uint8", **steps)
    raise ValueError(kind)


CASES = [
    # id, stack, macro, package, macro arguments, zaugnet predict options, step, the tensor of each deepImageJ
    # call (one call per pass: every gap of the pass in the batch axis)
    ("zaugnet_factor2_real_uint16", "real16", "zaugnet.ijm", "zaugnet", "factor=2", ["--factor", "2"], 2,
     ["(3, 2, 64, 64)"]),
    ("zaugnet_factor4_float32_padded", "float32_40x50", "zaugnet.ijm", "zaugnet", "factor=4", ["--factor", "4"],
     4, ["(1, 2, 48, 64)", "(2, 2, 48, 64)"]),
    ("zaugnet_plus_factor3_uint8", "uint8", "zaugnet_plus.ijm", "zaugnet_plus", "factor=3", ["--factor", "3"],
     3, ["(2, 3, 32, 48)"]),
]


@pytest.mark.parametrize(("kind", "macro", "package", "choice", "options", "step", "shapes"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_the_macro_on_an_in_memory_stack_in_process(kind: str, macro: str, package: str, choice: str,
                                                    options: list[str], step: int, shapes: list[str],
                                                    inprocess_standin: Path, tmp_path: Path) -> None:
    """numpy -> ImagePlus -> our macro (the stand-in's real bioimageio predict) -> ImagePlus -> numpy, in one
    Python process with ImageJ 1.53t; against ``zaugnet predict`` on the same stack and shipped package."""
    from support import SHARED_DATA

    data = _stack(kind, SHARED_DATA)
    model = SHIPPED / package
    title = f"{kind}.tif"
    req = _standin_request(inprocess_standin, macro, f"model={model} {choice}", title)
    report, arrays = run_worker(req, data, tmp_path / "ij")
    assert report["dialogs"] == [], report["dialogs"]
    found = _calls(report["log"])
    assert len(found) == len(shapes), report["log"]
    for line, shape in zip(found, shapes, strict=True):
        # JDLL's reader read the rdf and JDLL's weight order chose ONNX
        assert f"-> input {shape}, weights {WEIGHT_FORMAT} -> bioimageio predict ->" in line, found
        assert line.endswith("_output.tif"), found
    ref = reference(data, model, options, tmp_path)
    check_parity(report, arrays, data, ref, step, title)
    # nothing left behind in java.io.tmpdir by the macro or the stand-in
    assert sorted(p.name for p in (tmp_path / "ij").iterdir()
                  if p.name.startswith(("zaugnet_tmp_", "dij_standin_"))) == []


def _standin_request(standin: Path, macro: str, args: str, title: str) -> dict[str, Any]:
    """A worker request for ImageJ 1.53t with the stand-in of ``standin`` (and its JDLL class path)."""
    return {"backend": "standin", "ij_jar": str(IJ_JAR), "plugins_dir": str(standin), "bioimageio": str(BIOIMAGEIO),
            "jdll_classpath": (standin / "jdll.classpath").read_text(), "macro": str(MACROS / macro), "args": args,
            "title": title, "voxel": list(VOXEL), "unit": UNIT}


def test_a_macro_error_in_process_ends_with_its_message(inprocess_standin: Path, tmp_path: Path) -> None:
    """A refused parameter: with ImageJ's window the macro shows its error in a dialog that would wait forever;
    the worker stops at once and reports the dialog's text; no deepImageJ call was made."""
    data = _stack("uint8", Path("/nonexistent"))
    req = _standin_request(inprocess_standin, "zaugnet.ijm", f"model={SHIPPED / 'zaugnet'} factor=3", "s.tif")
    report, _ = run_worker(req, data, tmp_path / "ij", expect=3)
    assert "worker: stopped, a dialog opened" in report["stdout"], report["stdout"]
    assert "zaugnet.ijm: error: factor 3: ZAugNet predicts midpoints only" in report["stdout"], report["stdout"]
    assert "DeepImageJ Run (test stand-in)" not in report["stdout"]
    assert not (tmp_path / "ij" / "result.npz").exists()


def _with_documentation_map(package: Path, tmp: Path) -> Path:
    """A copy of the shipped ``package`` whose rdf gives ``documentation`` as bioimageio.spec's
    ``{source, sha256}`` mapping (what spec >= 0.5.11 writes), every other byte unchanged: JDLL 0.6.1 throws a
    ClassCastException on it (test_jdll_reader.py)."""
    copy = tmp / f"{package.name}_documentation_map"
    shutil.copytree(package, copy)
    rdf = (copy / "rdf.yaml").read_text()
    assert "\ndocumentation: README.md\n" in rdf
    (copy / "rdf.yaml").write_text(rdf.replace("\ndocumentation: README.md\n",
                                               "\ndocumentation:\n  source: README.md\n  sha256: " + "0" * 64 + "\n"))
    return copy


def test_an_rdf_jdll_cannot_read_stops_the_in_process_macro_at_once(inprocess_standin: Path,
                                                                    tmp_path: Path) -> None:
    """In process too the stand-in reads the rdf with JDLL 0.6.1's reader before anything runs: on the shipped
    ZAugNet package with ``documentation`` as a mapping, JDLL's ClassCastException leaves the command, the macro
    stops at once with its error (in a dialog, which the worker reports), no bioimageio run, no result image."""
    package = _with_documentation_map(SHIPPED / "zaugnet", tmp_path)
    data = _stack("uint8", Path("/nonexistent"))
    req = _standin_request(inprocess_standin, "zaugnet.ijm", f"model={package} factor=2", "s.tif")
    started = time.monotonic()
    report, _ = run_worker(req, data, tmp_path / "ij", expect=3)
    elapsed = time.monotonic() - started
    out = report["stdout"]
    assert "worker: stopped, a dialog opened: " in out, out
    stopped = json.loads(out.split("worker: stopped, a dialog opened: ", 1)[1].splitlines()[0])
    assert stopped["dialogs"] == [(
        "Macro | zaugnet.ijm: error: deepImageJ failed on gaps 1-1 of 1: java.lang.ClassCastException: class "
        "java.util.LinkedHashMap cannot be cast to class java.lang.String (java.util.LinkedHashMap and "
        "java.lang.String are in module java.base of loader 'bootstrap') (the whole error is in its Exception "
        "window)")], stopped
    # the exception came out of JDLL's reader, as in deepImageJ 3.1
    trace = stopped["text_windows"]["Exception"]
    assert "\tat io.bioimage.modelrunner.bioimageio.description.ModelDescriptorFactory.readFromLocalFile" in trace, trace
    assert "\tat DeepImageJ_Run.loadDescriptor" in trace, trace
    assert "DeepImageJ Run (test stand-in)" not in stopped["log"]  # no call was answered, nothing ran
    assert not (tmp_path / "ij" / "result.npz").exists()
    assert elapsed < 60, elapsed  # JVM and ImageJ start-up only: no wait for an output that will not come


# ------------------------------------------------------------------------------------ real Fiji (opt-in)
@pytest.fixture(scope="session")
def fiji_home_inprocess(fiji_home: str) -> Path:
    """FIJI_HOME (see conftest), with the display the in-process run needs."""
    missing = [what for what in ("xvfb-run", "xauth") if not shutil.which(what)]
    if missing:
        pytest.skip(f"the Fiji test needs {', '.join(missing)} for a display (apt-get install -y xvfb xauth)")
    return Path(fiji_home).resolve()


def test_in_a_real_fiji_with_deepimagej_through_pyimagej(fiji_home_inprocess: Path, tmp_path: Path) -> None:
    """Opt-in: the same in-process round trip in a real Fiji started by pyimagej from FIJI_HOME (as working
    directory, where deepImageJ looks for its engines), with the real deepImageJ, against zaugnet predict."""
    from support import SHARED_DATA

    data = _stack("real16", SHARED_DATA)
    model = SHIPPED / "zaugnet"
    req = {"backend": "fiji", "fiji_home": str(fiji_home_inprocess), "macro": str(MACROS / "zaugnet.ijm"),
           "args": f"model={model} factor=2", "title": "real16.tif", "voxel": list(VOXEL), "unit": UNIT}
    report, arrays = run_worker(req, data, tmp_path / "ij", cwd=fiji_home_inprocess)
    assert report["dialogs"] == [], report["dialogs"]
    ref = reference(data, model, ["--factor", "2"], tmp_path)
    check_parity(report, arrays, data, ref, 2, "real16.tif")


if __name__ == "__main__":  # the worker: python test_imagej_inprocess.py REQUEST.json
    try:
        status = worker(Path(sys.argv[1]))
    except BaseException:  # noqa: BLE001 - printed for the test, which fails with it
        import traceback

        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # ImageJ's AWT threads would keep the JVM, and so this process, alive
