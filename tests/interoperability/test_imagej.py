"""The Fiji macros ``fiji_macros/zaugnet.ijm``, ``zaugnet_plus.ijm`` and ``zaugnet_c.ijm`` run in real ImageJ, against
``zaugnet predict``.

What is real and what stands in:

- ImageJ is real: Debian's ImageJ 1.53t (``/usr/share/java/ij.jar``) runs each macro as
  ``xvfb-run -a java -jar ij.jar -batch MACRO "key=value ..."`` (ImageJ 1.53t needs a display for ``run(...)``).
  Everything the macros do (argument parsing, checks, the (K + 1)-channel hyperstacks of many gaps, mirror
  padding, TIFF files, passes and interleaving, bit-depth conversion, voxel size, clean-up, failure detection)
  runs for real; also with ImageJ's window (``-macro``), where the macros take their parameters from their dialog
  and deepImageJ's failures open ImageJ's "Exception" window.
- deepImageJ is NOT: it (and the Java engines it downloads) cannot be installed here (no Fiji, no Maven). Its
  ``DeepImageJ Run`` command is answered by a test-only ImageJ plugin, ``imagej/DeepImageJ_Run.java``, compiled
  here against ij.jar, that follows deepImageJ 3.1's ``runMacro``: it reads the rdf with JDLL 0.6.1's OWN reader
  (the unmodified JDLL sources of ``../shared/tools/jdll-rdf``, compiled here and loaded into ImageJ's JVM), so it
  refuses what deepImageJ refuses, with the same exception; it picks the weights in JDLL's order (ONNX first);
  it maps ImageJ channels to the model's channel axis and slices to its batch axis; it fails as deepImageJ does
  (an exception out of the command); and it computes with the real ``bioimageio predict`` command line on the
  SAME exported package with those weights. No number is faked. It logs every call, so the tests count them.
- With ``FIJI_HOME`` pointing to a Fiji.app that has deepImageJ, an opt-in test runs the same macros through
  pyimagej with the real deepImageJ; it skips, saying so, elsewhere.

Every macro result is compared with ``zaugnet predict INPUT --model PACKAGE`` on the same input: same shape and
dtype, original slices identical, predicted slices within the export tolerance (1e-4 of the intensity range,
plus 1 for integer rounding), voxel depth divided by the factor.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from support import imagej_communicate, imagej_java, macro_generator, run_imagej
from zaugnet.export.parity import TOLERANCE

from zaugnet.cli import main
from zaugnet.io.tiff import VoxelSize, read_stack, write_stack
from zaugnet.phantoms import simulate_stack

pytestmark = pytest.mark.imagej

ROOT = Path(__file__).resolve().parents[2]
MACROS = ROOT / "fiji_macros"
ZAUGNET_IJM = MACROS / "zaugnet.ijm"
PLUS_IJM = MACROS / "zaugnet_plus.ijm"
C_IJM = MACROS / "zaugnet_c.ijm"
#: The package variant each macro takes.
MACRO_VARIANT = {ZAUGNET_IJM: "zaugnet", PLUS_IJM: "zaugnet+", C_IJM: "zaugnet-c"}
#: Input channels of each variant's model (ZAugNet-C: K = 4 slices and the DPM).
CHANNELS = {"zaugnet": 2, "zaugnet+": 3, "zaugnet-c": 5}
HERE = Path(__file__).resolve().parent / "imagej"


# ------------------------------------------------------------------------------------ fixtures
# ``imagej``, ``jdll_classpath`` and ``standin`` (the compiled stand-in, reading rdfs with JDLL's reader) are in
# conftest.py: test_imagej_inprocess.py starts its JVM with the same ones.


@pytest.fixture(scope="session")
def no_plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plugins.dir with an empty ``plugins/``: ImageJ without deepImageJ."""
    root = tmp_path_factory.mktemp("no_plugins")
    (root / "plugins").mkdir()
    return root


@pytest.fixture(scope="session")
def fiji_packages(packages: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``variant -> package FOLDER`` (deepImageJ takes a folder): the session's exported (and bioimageio-tested)
    package zips, unpacked with zaugnet's checked unzip (``zaugnet export -o FOLDER`` writes the same files)."""
    from zaugnet.export.safezip import extract_zip

    out = tmp_path_factory.mktemp("fiji_packages")
    folders = {}
    for variant, package in packages.items():
        folder = extract_zip(package, out / variant.replace("+", "_plus").replace("-", "_"))
        assert (folder / "rdf.yaml").is_file()
        folders[variant] = folder
    return folders


# ------------------------------------------------------------------------------------ helpers
def _opt(value: object) -> str:
    text = str(value)
    return f"[{text}]" if " " in text else text


def macro_args(**options: object) -> str:
    """``key=value`` macro argument (``[...]`` around values with spaces)."""
    return " ".join(f"{key}={_opt(value)}" for key, value in options.items())


def run_imagej_window(code: str, plugins: Path, tmp: Path) -> str:
    """Run macro ``code`` in ImageJ 1.53t WITH its main window (-macro, under Xvfb), as a user's Fiji would;
    return the Log window's text. With the stand-in's plugins, ``Dismiss Dialogs`` runs first: a message dialog
    (a macro's error) is written to the Log and closed instead of waiting for a click."""
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / "log.txt"
    caller = tmp / "caller.ijm"
    first = 'run("Dismiss Dialogs");\n' if (plugins / "plugins" / "Dismiss_Dialogs.class").is_file() else ""
    caller.write_text(first + code + f'\nwait(300);\nFile.saveString(getInfo("log"), "{log}");\nrun("Quit");\n')
    out = imagej_communicate(imagej_java(plugins, tmp) + ["-macro", str(caller)], tmp)
    assert log.is_file(), out
    return log.read_text()


_CALL = re.compile(r"^DeepImageJ Run \(test stand-in\): (\S+) -> input \((\d+), (\d+), (\d+), (\d+)\), "
                   r"weights (\S+) -> bioimageio predict -> (\S+)$")
_ITEM = re.compile(r"^DeepImageJ Run \(test stand-in\)   batch (\d+): channel ranges((?: \[\S+, \S+\])+)$")


@dataclass
class Call:
    """One ``DeepImageJ Run`` the stand-in answered: its input title, tensor shape (batch, channel, y, x),
    weights, the file written, and per batch element the (min, max) of each channel."""
    title: str
    shape: tuple[int, int, int, int]
    weights: str
    written: str
    ranges: list[list[tuple[float, float]]]


def deepimagej_calls(log: str) -> list[Call]:
    """The stand-in's calls, in order, from a run's output."""
    calls: list[Call] = []
    for line in log.splitlines():
        if m := _CALL.match(line):
            title, b, c, y, x, weights, written = m.groups()
            calls.append(Call(title, (int(b), int(c), int(y), int(x)), weights, written, []))
        elif m := _ITEM.match(line):
            assert calls and int(m.group(1)) == len(calls[-1].ranges) + 1, line
            calls[-1].ranges.append([(float(lo), float(hi)) for lo, hi in re.findall(r"\[(\S+), (\S+)\]", m.group(2))])
    return calls


def assert_calls(log: str, batches: list[int], image: tuple[int, int, int], dpm: list[float] | None = None,
                 slices: list[np.ndarray] | None = None, weights: str = "onnx") -> list[Call]:
    """deepImageJ was called ``len(batches)`` times (and the macro says so), call k on ONE hyperstack that became
    a ``(batches[k],) + image`` (batch, channel, y, x) tensor: the images as slices (batch), their input slices
    (and DPM) as channels; each wrote ``<title>_output.tif``, with ``weights`` (JDLL's first choice: ONNX).
    ZAugNet+ / ZAugNet-C: the last channel of image i (over all calls, in order) was the constant ``dpm[i]``;
    ``slices``: the channels of image i had the value ranges of ``slices[i]`` (one 2D array per channel; mirror
    padding keeps a slice's range)."""
    calls = deepimagej_calls(log)
    assert [c.shape[0] for c in calls] == batches, log
    assert re.search(rf"\.ijm: \d+ -> \d+ slices in {len(batches)} deepImageJ call\(s\)", log), log
    ranges = []
    for call in calls:
        assert call.shape[1:] == image
        assert call.weights == weights
        assert call.written == f"{call.title}_output.tif"
        assert len(call.ranges) == call.shape[0]
        ranges += call.ranges
    if dpm is not None:
        assert len(dpm) == len(ranges)
        for i, (found, z) in enumerate(zip(ranges, dpm, strict=True)):
            assert found[-1][0] == found[-1][1] == np.float32(z), (i, found[-1], z)
    if slices is not None:
        assert len(slices) == len(ranges)
        for i, (found, want) in enumerate(zip(ranges, slices, strict=True)):
            expect = [(float(np.float32(s.min())), float(np.float32(s.max()))) for s in want]
            assert found[:len(expect)] == expect, (i, found, expect)
    return calls


def leftovers(tmp: Path) -> list[str]:
    """Temporary files or folders of the macros or the stand-in still in ``tmp``."""
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith(("zaugnet_tmp_", "dij_standin_")))


def check_parity(result: Path, source: Path, package: Path, options: list[str], step: int, tmp: Path) -> None:
    """The macro's ``result`` against ``zaugnet predict source --model package *options``."""
    reference = tmp / "reference.tif"
    assert main(["predict", str(source), "-o", str(reference), "--model", str(package), "--method", "model",
                 *options, "--quiet", "--device", "cpu"]) == 0
    got, want = read_stack(result, min_slices=2), read_stack(reference, min_slices=2)
    given = read_stack(source, min_slices=2)
    n = given.data.shape[0]
    assert got.data.shape == want.data.shape == ((n - 1) * step + 1, *given.data.shape[1:])
    assert got.data.dtype == want.data.dtype == given.data.dtype
    np.testing.assert_array_equal(got.data[::step], given.data)  # original slices copied exactly
    new = np.ones(got.data.shape[0], bool)
    new[::step] = False
    span = float(given.data.max()) - float(given.data.min())
    integer = np.issubdtype(given.data.dtype, np.integer)
    diff = np.abs(got.data[new].astype(np.float64) - want.data[new].astype(np.float64))
    assert diff.max() <= TOLERANCE * span + (1 if integer else 0), (diff.max(), span)
    assert float(np.std(got.data[new])) > 0  # real predictions, not an empty slice
    assert got.voxel_size.z == pytest.approx(given.voxel_size.z / step, rel=1e-5)
    assert want.voxel_size.z == pytest.approx(given.voxel_size.z / step, rel=1e-5)
    assert (got.voxel_size.y, got.voxel_size.x) == pytest.approx((given.voxel_size.y, given.voxel_size.x), rel=1e-5)


def real_crop(shared: Path, name: str, z: slice, tmp: Path, dtype: str | None = None) -> Path:
    """A small crop (64 x 64 in XY around the centre, a few slices) of a real stack from the shared data."""
    stack = read_stack(shared / name)
    data = stack.data[z]
    y0, x0 = (data.shape[1] - 64) // 2, (data.shape[2] - 64) // 2
    crop = np.ascontiguousarray(data[:, y0:y0 + 64, x0:x0 + 64])
    if dtype is not None:
        assert crop.min() >= np.iinfo(dtype).min and crop.max() <= np.iinfo(dtype).max
        crop = crop.astype(dtype)
    path = tmp / f"{Path(name).stem}_crop.tif"
    voxel = stack.voxel_size if stack.voxel_size.z else VoxelSize(0.2, 0.056, 0.056)
    write_stack(path, crop, "ZYX", voxel)
    return path


def synthetic(path: Path, shape: tuple[int, int, int], dtype: str, seed: int) -> Path:
    data = simulate_stack(shape, kind="nuclei", seed=seed, z_step_um=0.6, xy_step_um=0.2, dtype=dtype)
    write_stack(path, data, "ZYX", VoxelSize(0.6, 0.2, 0.2))
    return path


def _windows(data: np.ndarray, positions: int = 1, k: int = 4) -> list[np.ndarray]:
    """ZAugNet-C's input slices per (gap, position) of a (Z, Y, X) stack, gap-major, edge slices repeated
    (zaugnet predict's windows)."""
    from zaugnet.gaps import context_indices

    return [data[context_indices(g, 1, k, 0, len(data))] for g in range(len(data) - 1) for _ in range(positions)]


def package_with(folder: Path, tmp: Path, edit) -> Path:
    """A copy of the package ``folder`` whose rdf.yaml is ``edit(rdf)`` (the parsed YAML, changed in place)."""
    copy = tmp / f"{folder.name}_edited"
    shutil.copytree(folder, copy)
    rdf = yaml.safe_load((copy / "rdf.yaml").read_text())
    edit(rdf)
    (copy / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return copy


# ------------------------------------------------------------------------------------ the macros' text
def test_the_three_macros_are_generated_from_one_template() -> None:
    """zaugnet.ijm, zaugnet_plus.ijm and zaugnet_c.ijm are what ``fiji_macros/generate_macros.py`` writes from
    ``zaugnet.ijm.in`` (one code for all variants; only the header and three variables differ), and deepImageJ
    is called from exactly one function."""
    generator = macro_generator()
    assert sorted(generator.VARIANTS) == sorted(p.name for p in MACRO_VARIANT)
    for path, variant in MACRO_VARIANT.items():
        text = path.read_text()
        assert text == generator.render(path.name), f"{path.name} is stale: run python fiji_macros/generate_macros.py"
        assert f'var ZA_VARIANT = "{variant}";' in text
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
        assert code.count('"DeepImageJ Run"') == 2  # the call, and the installed-command check
        assert code.count('run("DeepImageJ Run"') == 1
        call = re.search(r"function zaRunDeepImageJ\(model, file, outDir\) \{\n(.*?)\n\}", text, re.DOTALL)
        assert call and 'run("DeepImageJ Run", "model_path="' in call.group(1)
        assert "input_path=" in call.group(1) and "output_folder=" in call.group(1)
        assert "display_output=null" in call.group(1)
        assert "master / 3.1.x" in text  # the deepImageJ versions it was written for
    bodies = {re.sub(r'(?s)\A.*?\nvar ZA_NAME = "[^"]*";\n', "", p.read_text()) for p in MACRO_VARIANT}
    assert len(bodies) == 1  # the same code below the three variables
    assert subprocess.run([sys.executable, str(MACROS / "generate_macros.py"), "--check"], check=False).returncode == 0


# ------------------------------------------------------------------------------------ parity
def test_zaugnet_factor2_on_a_real_stack(standin: Path, fiji_packages: dict[str, Path], shared_data: Path,
                                         tmp_path: Path) -> None:
    """ZAugNet, factor 2 (one pass, 4 pairs), on a real uint16 stack (5 x 64 x 64 crop): ONE deepImageJ call
    (it was 4, one per pair), its 4 pairs the batch."""
    source = real_crop(shared_data, "mitograph_yeast_mito_test001.tif", slice(18, 23), tmp_path)
    out = tmp_path / "out dir" / "x2.tif"  # a space in the path: bracketed macro arguments
    out.parent.mkdir()
    log = run_imagej(ZAUGNET_IJM, macro_args(model=fiji_packages["zaugnet"], input=source, factor=2, output=out),
                     standin, tmp_path / "ij")
    assert out.is_file(), log
    assert "zaugnet.ijm: wrote" in log
    data = read_stack(source).data
    assert_calls(log, [4], (2, 64, 64), slices=[data[[i, i + 1]] for i in range(4)])
    check_parity(out, source, fiji_packages["zaugnet"], ["--factor", "2"], 2, tmp_path)
    assert leftovers(tmp_path / "ij") == []


def test_zaugnet_factor4_on_a_16bit_synthetic_stack_of_an_invalid_size(
        standin: Path, fiji_packages: dict[str, Path], tmp_path: Path) -> None:
    """ZAugNet, factor 4 (two passes), uint16, 40 x 50 slices: the macro mirror-pads to 48 x 64 for the model
    (bioimageio accepts 32 + n*16 only) and crops back, matching the network's own padding. One call per pass:
    2 calls (it was 3, one per pair)."""
    source = synthetic(tmp_path / "nuclei16.tif", (2, 40, 50), "uint16", seed=5)
    out = tmp_path / "x4.tif"
    log = run_imagej(ZAUGNET_IJM, macro_args(model=fiji_packages["zaugnet"], input=source, factor=4, output=out),
                     standin, tmp_path / "ij")
    assert out.is_file(), log
    assert_calls(log, [1, 2], (2, 48, 64))  # pass 1: one pair, pass 2: two pairs; padded to valid sizes
    check_parity(out, source, fiji_packages["zaugnet"], ["--factor", "4"], 4, tmp_path)
    with tifffile.TiffFile(out) as tif:  # an ImageJ z-stack, not channels or frames
        assert tif.is_imagej and tif.imagej_metadata.get("slices") == 5
        assert tif.imagej_metadata.get("channels", 1) == 1 and tif.imagej_metadata.get("frames", 1) == 1
    assert leftovers(tmp_path / "ij") == []


def test_zaugnet_plus_factor3_on_a_real_8bit_stack(standin: Path, fiji_packages: dict[str, Path],
                                                   shared_data: Path, tmp_path: Path) -> None:
    """ZAugNet+, factor 3 (z = 1/3, 2/3 in each of 2 gaps), on a real 8-bit stack (chromosomes, 3 x 64 x 64):
    ONE call of 4 images (it was 4 calls)."""
    source = real_crop(shared_data, "neubias_chromosomes.tif", slice(18, 21), tmp_path, dtype="uint8")
    out = tmp_path / "x3.tif"
    log = run_imagej(PLUS_IJM, macro_args(model=fiji_packages["zaugnet+"], input=source, factor=3, output=out),
                     standin, tmp_path / "ij")
    assert out.is_file(), log
    assert "zaugnet_plus.ijm: wrote" in log
    data = read_stack(source).data
    assert_calls(log, [4], (3, 64, 64), dpm=[1 / 3, 2 / 3] * 2,  # 2 gaps x 2 positions, [slice_0, slice_1, dpm]
                 slices=[data[[0, 1]], data[[0, 1]], data[[1, 2]], data[[1, 2]]])
    check_parity(out, source, fiji_packages["zaugnet+"], ["--factor", "3"], 3, tmp_path)
    assert leftovers(tmp_path / "ij") == []


def test_zaugnet_plus_positions_on_the_current_32bit_image(standin: Path, fiji_packages: dict[str, Path],
                                                          tmp_path: Path) -> None:
    """ZAugNet+ at z = 0.25, 0.5, 0.75 on the CURRENT image (opened by a calling macro), 32-bit: the caller's
    image stays open and unchanged beside the result."""
    source = synthetic(tmp_path / "nuclei32.tif", (2, 48, 48), "float32", seed=6)
    out = tmp_path / "z.tif"
    caller = tmp_path / "caller.ijm"
    args = macro_args(model=fiji_packages["zaugnet+"], positions="0.25,0.5,0.75", output=out)
    caller.write_text(f'open("{source}");\nrunMacro("{PLUS_IJM}", "{args}");\n'
                      'titles = ""; for (i = 1; i <= nImages; i++) { selectImage(i); titles = titles + getTitle() + ";"; }\n'
                      'print("open images: " + titles);\n')
    log = run_imagej(caller, "", standin, tmp_path / "ij")
    assert out.is_file(), log
    assert "open images: nuclei32.tif;z.tif;" in log
    assert_calls(log, [3], (3, 48, 48), dpm=[0.25, 0.5, 0.75])
    check_parity(out, source, fiji_packages["zaugnet+"], ["--z-positions", "0.25", "0.5", "0.75"], 4, tmp_path)
    assert leftovers(tmp_path / "ij") == []


def test_zaugnet_c_factor2_on_a_real_stack(standin: Path, fiji_packages: dict[str, Path], shared_data: Path,
                                           tmp_path: Path) -> None:
    """ZAugNet-C, factor 2, on a real uint16 stack (cellfinder mouse brain, 4 x 64 x 64): 3 gaps in ONE call,
    each a 5-channel image of slices (i-1, i, i+1, i+2) and the DPM; the first gap repeats slice 1, the last
    slice 4."""
    source = real_crop(shared_data, "cellfinder_mousebrain_ch0_crop.tif", slice(12, 16), tmp_path)
    out = tmp_path / "x2.tif"
    log = run_imagej(C_IJM, macro_args(model=fiji_packages["zaugnet-c"], input=source, factor=2, output=out),
                     standin, tmp_path / "ij")
    assert out.is_file(), log
    assert "zaugnet_c.ijm: wrote" in log
    data = read_stack(source).data
    assert_calls(log, [3], (5, 64, 64), dpm=[0.5] * 3, slices=_windows(data))
    check_parity(out, source, fiji_packages["zaugnet-c"], ["--factor", "2"], 2, tmp_path)
    assert leftovers(tmp_path / "ij") == []


def test_zaugnet_c_positions_on_a_two_slice_8bit_stack_of_an_invalid_size(
        standin: Path, fiji_packages: dict[str, Path], tmp_path: Path) -> None:
    """ZAugNet-C at z = 0.25, 0.75 on an 8-bit synthetic stack of 2 slices of 40 x 50: the only gap is both the
    first and the last, so its input is [1, 1, 2, 2]; mirror-padded to 48 x 64 and cropped back; 8-bit results
    (the model is not clamped) rounded and clipped as zaugnet predict does."""
    source = synthetic(tmp_path / "nuclei8.tif", (2, 40, 50), "uint8", seed=9)
    out = tmp_path / "z.tif"
    log = run_imagej(C_IJM, macro_args(model=fiji_packages["zaugnet-c"], input=source, positions="0.25,0.75",
                                       output=out), standin, tmp_path / "ij")
    assert out.is_file(), log
    data = read_stack(source, min_slices=2).data
    assert_calls(log, [2], (5, 48, 64), dpm=[0.25, 0.75], slices=[data[[0, 0, 1, 1]]] * 2)
    check_parity(out, source, fiji_packages["zaugnet-c"], ["--z-positions", "0.25", "0.75"], 3, tmp_path)
    assert leftovers(tmp_path / "ij") == []


@pytest.mark.parametrize(("batch", "batches"), [(None, [33]), (10, [10, 10, 10, 3])], ids=["default", "batch10"])
def test_zaugnet_c_factor4_on_12_slices_needs_one_call_or_chunks_of_batch(
        batch: int | None, batches: list[int], standin: Path, fiji_packages: dict[str, Path],
        tmp_path: Path) -> None:
    """ZAugNet-C x4 on 12 slices: 11 gaps x 3 positions = 33 new slices. One deepImageJ call (one model load)
    by default, where one call per slice used to make 33; with batch=10 at most 10 images per call (bounded
    memory): 4 calls. The same result either way (checked against zaugnet predict)."""
    source = synthetic(tmp_path / "nuclei12.tif", (12, 32, 32), "uint16", seed=12)
    out = tmp_path / "x4.tif"
    options = {"model": fiji_packages["zaugnet-c"], "input": source, "factor": 4, "output": out}
    if batch is not None:
        options["batch"] = batch
    log = run_imagej(C_IJM, macro_args(**options), standin, tmp_path / "ij")
    assert out.is_file(), log
    data = read_stack(source).data
    assert_calls(log, batches, (5, 32, 32), dpm=[0.25, 0.5, 0.75] * 11, slices=_windows(data, positions=3))
    check_parity(out, source, fiji_packages["zaugnet-c"], ["--factor", "4"], 4, tmp_path)
    assert leftovers(tmp_path / "ij") == []


def test_jdll_s_weight_order_picks_onnx_else_torchscript(standin: Path, fiji_packages: dict[str, Path],
                                                         tmp_path: Path) -> None:
    """Our packages list onnx, pytorch_state_dict and torchscript weights; JDLL tries them in that order and
    skips pytorch_state_dict (no Java engine), so deepImageJ runs ONNX (every test above: ``weights onnx``).
    Without the onnx entry it runs TorchScript: the stand-in does the same, with the same result."""
    package = package_with(fiji_packages["zaugnet"], tmp_path, lambda rdf: rdf["weights"].pop("onnx"))
    source = synthetic(tmp_path / "s.tif", (3, 32, 32), "uint16", seed=3)
    out = tmp_path / "x2.tif"
    log = run_imagej(ZAUGNET_IJM, macro_args(model=package, input=source, factor=2, output=out),
                     standin, tmp_path / "ij")
    assert out.is_file(), log
    assert_calls(log, [2], (2, 32, 32), weights="torchscript")
    check_parity(out, source, fiji_packages["zaugnet"], ["--factor", "2"], 2, tmp_path)


@pytest.mark.parametrize(("macro", "choice", "options", "step", "suffix", "batches"), [
    (ZAUGNET_IJM, "factor=4", ["--factor", "4"], 4, "_zaugnet_x4", [1, 2]),
    (PLUS_IJM, "positions=0.25,0.5,0.75", ["--z-positions", "0.25", "0.5", "0.75"], 4, "_zaugnet_plus_z3", [3]),
    (C_IJM, "factor=3", ["--factor", "3"], 3, "_zaugnet_c_x3", [2]),
], ids=["zaugnet_factor4", "zaugnet_plus_positions", "zaugnet_c_factor3"])
def test_the_dialog_with_imagej_s_window(macro: Path, choice: str, options: list[str], step: int, suffix: str,
                                         batches: list[int], standin: Path, fiji_packages: dict[str, Path],
                                         tmp_path: Path) -> None:
    """Interactive use: ImageJ with its window, a stack open, the macro run from Plugins > Macros > Run... with
    no argument, so it asks with its dialog (answered here by the macro options of that command, as ImageJ does
    for recorded dialogs); the result is left open as a new image next to the original."""
    variant = MACRO_VARIANT[macro]
    source = synthetic(tmp_path / "stack16.tif", (2, 32, 48), "uint16", seed=8)
    out = tmp_path / "dialog_result.tif"
    code = (f'open("{source}");\n'
            f'run("Run...", "run=[{macro}] model=[{fiji_packages[variant]}] {choice}");\n'
            'titles = ""; for (i = 1; i <= nImages; i++) { selectImage(i); titles = titles + getTitle() + ";"; }\n'
            'print("open images: " + titles);\n'
            f'selectImage(nImages); saveAs("Tiff", "{out}");\n')
    log = run_imagej_window(code, standin, tmp_path / "ij")
    assert f"open images: stack16.tif;stack16{suffix};" in log, log
    assert "Dismiss Dialogs (test)" not in log  # no error dialog
    assert_calls(log, batches, (CHANNELS[variant], 32, 48))
    check_parity(out, source, fiji_packages[variant], options, step, tmp_path)
    assert leftovers(tmp_path / "ij") == []


# ------------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize("macro", [ZAUGNET_IJM, PLUS_IJM, C_IJM], ids=["zaugnet", "zaugnet_plus", "zaugnet_c"])
def test_without_deepimagej_the_macro_stops_with_a_clear_message(
        macro: Path, imagej: Path, no_plugins: Path, fiji_packages: dict[str, Path], tmp_path: Path) -> None:
    """ImageJ without deepImageJ: a clear message, no result file, nothing left behind."""
    source = synthetic(tmp_path / "s.tif", (3, 32, 32), "uint16", seed=1)
    variant = MACRO_VARIANT[macro]
    out = tmp_path / "out.tif"
    log = run_imagej(macro, macro_args(model=fiji_packages[variant], input=source, factor=2, output=out),
                     no_plugins, tmp_path / "ij")
    assert f"{macro.name}: error: deepImageJ is not installed" in log
    assert "Manage update sites" in log  # says how to install it
    assert not out.exists()
    assert leftovers(tmp_path / "ij") == []


def _zip_of(folder: Path, tmp: Path) -> Path:
    return Path(shutil.make_archive(str(tmp / "package"), "zip", folder))


@pytest.mark.parametrize("case", ["missing", "no_rdf", "zip", "none_given", "relative"])
def test_a_wrong_model_folder_is_refused(case: str, standin: Path, fiji_packages: dict[str, Path],
                                         tmp_path: Path) -> None:
    """Wrong model folders are refused before deepImageJ runs. A RELATIVE path too, even where it names a package
    in the current folder: deepImageJ resolves a relative model_path against Fiji.app/models and then looks for
    that name on bioimage.io, so it would not run the package the user meant; the message gives the absolute path."""
    source = synthetic(tmp_path / "s.tif", (3, 32, 32), "uint16", seed=1)
    empty = tmp_path / "empty_model"
    empty.mkdir()
    (empty / "README.md").write_text("not a package")
    cwd = tmp_path / "ij"  # ImageJ's working directory (run_imagej)
    cwd.mkdir()
    shutil.copytree(fiji_packages["zaugnet"], cwd / "pkg")
    model, expected = {
        "missing": (tmp_path / "no_such_folder", "model folder .* not found"),
        "no_rdf": (empty, "wrong model folder .*: no rdf.yaml in it"),
        "zip": (_zip_of(fiji_packages["zaugnet"], tmp_path), "model .* is a zip file; deepImageJ takes the package as a FOLDER"),
        "none_given": ("", "no model folder given"),
        "relative": ("pkg", re.escape("model=pkg is a relative path: deepImageJ would look for it in Fiji.app/models "
                                      "and then on bioimage.io, not in the current folder; give the absolute path "
                                      f"of the package folder (here: model={cwd / 'pkg'})")),
    }[case]
    out = tmp_path / "out.tif"
    options = {"input": source, "factor": 2, "output": out}
    if model != "":
        options = {"model": model, **options}
    log = run_imagej(ZAUGNET_IJM, macro_args(**options), standin, cwd)
    assert re.search("zaugnet.ijm: error: " + expected, log), log
    assert deepimagej_calls(log) == []
    assert not out.exists()


@pytest.mark.parametrize("case", ["one_slice", "channels", "frames"])
@pytest.mark.parametrize("macro", [ZAUGNET_IJM, PLUS_IJM, C_IJM], ids=["zaugnet", "zaugnet_plus", "zaugnet_c"])
def test_an_image_that_is_not_a_z_stack_is_refused(case: str, macro: Path, standin: Path,
                                                   fiji_packages: dict[str, Path], tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    source = tmp_path / f"{case}.tif"
    if case == "one_slice":
        tifffile.imwrite(source, rng.integers(0, 4000, (1, 40, 40), dtype=np.uint16), imagej=True,
                         metadata={"axes": "ZYX"})
        expected = "is not a z-stack: it has 1 slice"
    elif case == "channels":
        tifffile.imwrite(source, rng.integers(0, 4000, (4, 2, 40, 40), dtype=np.uint16), imagej=True,
                         metadata={"axes": "ZCYX"})
        expected = "is not a z-stack: it has 2 channels"
    else:
        tifffile.imwrite(source, rng.integers(0, 4000, (3, 4, 40, 40), dtype=np.uint16), imagej=True,
                         metadata={"axes": "TZYX"})
        expected = "is not a z-stack: it has 3 time points"
    variant = MACRO_VARIANT[macro]
    out = tmp_path / "out.tif"
    log = run_imagej(macro, macro_args(model=fiji_packages[variant], input=source, factor=2, output=out),
                     standin, tmp_path / "ij")
    assert f"{macro.name}: error: {case}.tif {expected}" in log, log
    assert not out.exists()
    assert leftovers(tmp_path / "ij") == []


@pytest.mark.parametrize(("macro", "variant", "options", "expected"), [
    (ZAUGNET_IJM, "zaugnet", {"factor": 3}, "factor 3: ZAugNet predicts midpoints only"),
    (ZAUGNET_IJM, "zaugnet+", {"factor": 2}, "is a ZAugNet\\+ package .*use zaugnet_plus.ijm"),
    (PLUS_IJM, "zaugnet", {"factor": 2}, "is a ZAugNet package .*use zaugnet.ijm"),
    (PLUS_IJM, "zaugnet+", {"positions": "0.5,0.25"}, "need increasing values"),
    (PLUS_IJM, "zaugnet+", {"positions": "0.5,1.2"}, "strictly between 0 and 1"),
    (PLUS_IJM, "zaugnet+", {"factor": 2, "positions": "0.5"}, "give only one of factor= and positions="),
    (ZAUGNET_IJM, "zaugnet", {"fcator": 2}, "unknown key 'fcator'"),
    (ZAUGNET_IJM, "zaugnet", {"positions": "0.5"}, "unknown key 'positions'"),
    (ZAUGNET_IJM, "zaugnet-c", {"factor": 2},
     "is a ZAugNet-C package \\(input channels: 4 slices and dpm\\); use zaugnet_c.ijm"),
    (PLUS_IJM, "zaugnet-c", {"factor": 2}, "is a ZAugNet-C package .*use zaugnet_c.ijm"),
    (C_IJM, "zaugnet", {"factor": 2}, "is a ZAugNet package .*use zaugnet.ijm"),
    (C_IJM, "zaugnet+", {"factor": 2}, "is a ZAugNet\\+ package .*use zaugnet_plus.ijm"),
    (C_IJM, "zaugnet-c", {"factor": 1}, "factor 1: must be a whole number from 2 to 1024"),
    (C_IJM, "zaugnet-c", {"factor": "2.5"}, "factor=2.5: expected a whole number"),
    (C_IJM, "zaugnet-c", {"positions": "0.5,0.25"}, "need increasing values"),
    (C_IJM, "zaugnet-c", {"positions": "0,0.5"}, "strictly between 0 and 1"),
    (C_IJM, "zaugnet-c", {"factor": 2, "positions": "0.5"}, "give only one of factor= and positions="),
    (C_IJM, "zaugnet-c", {"factor": 2, "wait": "-1"}, "wait=-1: expected a number of seconds >= 0"),
    (C_IJM, "zaugnet-c", {"factor": 2, "batch": "0"}, "batch=0: expected a whole number >= 1"),
    (PLUS_IJM, "zaugnet+", {"factor": 2, "batch": "1.5"}, "batch=1.5: expected a whole number"),
    (C_IJM, "zaugnet-c", {"z": 0.5}, "unknown key 'z'"),
], ids=["zaugnet_factor3", "zaugnet_gets_plus_model", "plus_gets_zaugnet_model", "positions_order",
        "positions_range", "factor_and_positions", "typo", "zaugnet_positions", "zaugnet_gets_c_model",
        "plus_gets_c_model", "c_gets_zaugnet_model", "c_gets_plus_model", "c_factor1", "c_factor_not_whole",
        "c_positions_order", "c_positions_range", "c_factor_and_positions", "c_wait", "c_batch0", "plus_batch",
        "c_typo"])
def test_bad_parameters_are_refused(macro: Path, variant: str, options: dict, expected: str, standin: Path,
                                    fiji_packages: dict[str, Path], tmp_path: Path) -> None:
    source = synthetic(tmp_path / "s.tif", (3, 32, 32), "uint16", seed=1)
    out = tmp_path / "out.tif"
    log = run_imagej(macro, macro_args(model=fiji_packages[variant], input=source, output=out, **options),
                     standin, tmp_path / "ij")
    assert re.search(f"{macro.name}: error: .*{expected}", log), log
    assert not out.exists()


# ------------------------------------------------------------------------------------ deepImageJ fails
def _no_id(rdf: dict) -> None:
    del rdf["id"]
    assert "config" in rdf  # JDLL then needs config.bioimageio.nickname


def _documentation_map(rdf: dict) -> None:
    rdf["documentation"] = {"source": "README.md", "sha256": "0" * 64}  # what bioimageio.spec >= 0.5.11 writes


def _format_06(rdf: dict) -> None:
    rdf["format_version"] = "0.6.0"


@pytest.mark.parametrize(("edit", "exception"), [
    (_documentation_map, ("java.lang.ClassCastException: class java.util.LinkedHashMap cannot be cast to class "
                          "java.lang.String")),
    (_no_id, "java.lang.NullPointerException"),
    (_format_06, "java.lang.IllegalArgumentException: JDLL only supports the Bioimage.io model specs 0.4 and 0.5."),
], ids=["documentation_map", "no_id", "format_0.6"])
def test_an_rdf_jdll_cannot_read_is_refused_as_deepimagej_refuses_it(
        edit, exception: str, standin: Path, fiji_packages: dict[str, Path], tmp_path: Path) -> None:
    """The stand-in reads the rdf with JDLL 0.6.1's own reader first, as deepImageJ does: our exported packages
    pass (every test above), these constructed rdfs do not (see ../shared/tools/jdll-rdf/README.md). JDLL's
    exception leaves the command, ImageJ prints it (no window: -batch), no output is written, and the macro
    stops AT ONCE (deepImageJ 3.1's call returns only after writing its outputs) with a clear message."""
    package = package_with(fiji_packages["zaugnet"], tmp_path, edit)
    source = synthetic(tmp_path / "s.tif", (3, 32, 32), "uint16", seed=1)
    out = tmp_path / "out.tif"
    started = time.monotonic()
    log = run_imagej(ZAUGNET_IJM, macro_args(model=package, input=source, factor=2, output=out),
                     standin, tmp_path / "ij")
    elapsed = time.monotonic() - started
    assert exception in log, log
    assert "at io.bioimage.modelrunner.bioimageio.description.ModelDescriptorFactory.readFromLocalFile" in log
    assert ("zaugnet.ijm: error: deepImageJ failed on gaps 1-2 of 2: its call returned without writing "
            f"{tmp_path / 'ij'}/zaugnet_tmp_") in log, log
    assert deepimagej_calls(log) == []
    assert not out.exists()
    assert leftovers(tmp_path / "ij") == []
    assert elapsed < 60, elapsed  # no waiting for an output that will not come (was: 60 s per call)


def _damaged(package: Path, tmp: Path) -> Path:
    """A copy of ``package`` whose ONNX weights (the ones JDLL picks) are cut short: bioimageio refuses them."""
    broken = tmp / "broken_model"
    shutil.copytree(package, broken)
    weights = broken / yaml.safe_load((broken / "rdf.yaml").read_text())["weights"]["onnx"]["source"]
    weights.write_bytes(weights.read_bytes()[:-100])
    return broken


@pytest.mark.parametrize("macro", [ZAUGNET_IJM, C_IJM], ids=["zaugnet", "zaugnet_c"])
def test_a_failing_deepimagej_run_stops_the_macro_at_once_without_a_result(
        macro: Path, standin: Path, fiji_packages: dict[str, Path], tmp_path: Path) -> None:
    """deepImageJ fails on the first call (here: a package whose ONNX weights were damaged, so the run fails):
    like deepImageJ, the stand-in throws (ImageJ prints the exception, without its window); the macro stops at
    once with a clear message naming the gaps, writes no result and removes its temporary files."""
    broken = _damaged(fiji_packages[MACRO_VARIANT[macro]], tmp_path)
    source = synthetic(tmp_path / "s.tif", (3, 32, 32), "uint16", seed=1)
    out = tmp_path / "out.tif"
    log = run_imagej(macro, macro_args(model=broken, input=source, factor=2, output=out), standin, tmp_path / "ij")
    assert ("java.lang.RuntimeException: java.io.IOException: io.bioimage.modelrunner.exceptions.RunModelException: "
            "bioimageio predict exited with") in log, log
    assert f"{macro.name}: error: deepImageJ failed on gaps 1-2 of 2: its call returned without writing " in log, log
    assert not out.exists()
    assert leftovers(tmp_path / "ij") == []


def test_with_imagej_s_window_the_macro_quotes_deepimagej_s_exception(
        standin: Path, fiji_packages: dict[str, Path], tmp_path: Path) -> None:
    """With ImageJ's window (a user's Fiji), deepImageJ's exception opens ImageJ's "Exception" window: the macro
    finds it right after the call and stops with the exception's line (its error dialog is recorded and closed
    here by the test-only ``Dismiss Dialogs``)."""
    broken = _damaged(fiji_packages["zaugnet-c"], tmp_path)
    source = synthetic(tmp_path / "s.tif", (3, 32, 32), "uint16", seed=1)
    code = (f'open("{source}");\n'
            f'r = runMacro("{C_IJM}", "model=[{broken}] factor=2");\n'
            'print("runMacro returned " + r);\n'
            'titles = getList("window.titles"); print("windows: " + String.join(titles));\n')
    log = run_imagej_window(code, standin, tmp_path / "ij")
    assert ("Dismiss Dialogs (test): Macro: zaugnet_c.ijm: error: deepImageJ failed on gaps 1-2 of 2: "
            "java.lang.RuntimeException: java.io.IOException: io.bioimage.modelrunner.exceptions.RunModelException: "
            "bioimageio predict exited with 1") in log, log
    assert "(the whole error is in its Exception window)" in log
    assert "runMacro returned [aborted]" in log
    assert re.search(r"windows: .*Exception", log)  # left open for the user to read
    assert leftovers(tmp_path / "ij") == []


# ------------------------------------------------------------------------------------ real Fiji (opt-in)
def test_in_a_real_fiji_with_deepimagej_through_pyimagej(fiji_home: str, fiji_packages: dict[str, Path],
                                                         tmp_path: Path) -> None:
    """Opt-in: the same macros in a real Fiji.app with deepImageJ installed (its engines too, or internet for their
    first download), driven by pyimagej (``imagej.init(FIJI_HOME, mode="headless")``), against ``zaugnet predict``;
    one deepImageJ call per macro run (the 3-slice stack's gaps in one batch). Set FIJI_HOME."""
    source16 = synthetic(tmp_path / "nuclei16.tif", (3, 64, 64), "uint16", seed=7)
    cases = [
        (ZAUGNET_IJM, "zaugnet", {"factor": 2}, ["--factor", "2"], 2),
        (PLUS_IJM, "zaugnet+", {"factor": 3}, ["--factor", "3"], 3),
        (C_IJM, "zaugnet-c", {"factor": 3}, ["--factor", "3"], 3),
    ]
    for macro, variant, options, predict_options, step in cases:
        out = tmp_path / f"{macro.stem}.tif"
        args = macro_args(model=fiji_packages[variant], input=source16, output=out, **options)
        done = subprocess.run([sys.executable, str(HERE / "run_in_fiji.py"), fiji_home, str(macro), args],
                              check=False, capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0 and out.is_file(), done.stdout + done.stderr
        assert f"{macro.name}: 3 -> {2 * step + 1} slices in 1 deepImageJ call(s)" in done.stdout, done.stdout
        check_parity(out, source16, fiji_packages[variant], predict_options, step, tmp_path)
