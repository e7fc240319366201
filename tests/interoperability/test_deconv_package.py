"""ZS-DeconvNet packages: ``zaugnet export`` on a ``zaugnet deconv train`` checkpoint, end to end.

A tiny two-stage U-Net (4 channels, 2 poolings per stage, random weights; an RCAN once) is saved with the
training checkpoint code; its affine comes from a uint16 nuclei phantom. Checked for real, nothing mocked:
bioimageio.core's test (its Python API and the ``bioimageio test`` command line), JDLL 0.6.1's rdf reader
(``read-rdf``, what deepImageJ 3.1 runs), TorchScript and ONNX Runtime against the eager network, the package's
prediction (``bioimageio predict``: halo padding, pre- and post-processing) against ``zaugnet deconv predict``,
the refusal of a checkpoint that would run code, and the Fiji macro ``fiji_macros/zs_deconvnet.ijm`` in
ImageJ 1.53t with the deepImageJ stand-in of ``imagej/DeepImageJ_Run.java`` (which runs ``bioimageio
predict`` on the same package; see test_imagej.py). The macro with the real deepImageJ needs a Fiji.app
(``FIJI_HOME``) and skips elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from support import macro_generator, run_imagej
from zaugnet.export.bioimageio import NO_MAINTAINER_WARNING, run_bioimageio_test
from zaugnet.export.deconv import (
    HALO,
    MIN_SIZES,
    OUTPUT_IDS,
    TwoStageNetwork,
    export_deconv_model,
    max_abs_error,
)
from zaugnet.export.onnx import onnx_session, run_onnx_all
from zaugnet.export.parity import TOLERANCE
from zaugnet.export.torchscript import load_torchscript
from zaugnet.training.checkpoint import save_checkpoint
from zaugnet.training.deconv.checkpoint import load_deconv_network
from zaugnet.training.deconv.config import FAMILY, build_deconv_config
from zaugnet.training.deconv.nets import ZSDeconvNet3D

from zaugnet.cli import main
from zaugnet.deconv.predict import Affine, ParitySplit
from zaugnet.errors import InputError
from zaugnet.io.tiff import VoxelSize, read_stack, write_stack
from zaugnet.phantoms import simulate_stack

pytestmark = pytest.mark.bioimageio

ROOT = Path(__file__).resolve().parents[2]
BIOIMAGEIO = str(Path(sys.executable).with_name("bioimageio"))
READ_RDF = ROOT.parent / "shared" / "tools" / "jdll-rdf" / "read-rdf"
MACROS = ROOT / "fiji_macros"
DECONV_IJM = MACROS / "zs_deconvnet.ijm"
TINY_NET = {"kind": "unet", "channels": 4, "levels": 2}  # the small preset's kind
TINY_RCAN = {"kind": "rcan", "channels": 4, "head_channels": 4, "groups": 1, "blocks": 1, "reduction": 2}
VOXEL = (0.5, 0.2)  # z, xy (um)


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A uint16 nuclei phantom, 12 x 40 x 52 (not square, not a multiple of anything), with its voxel size."""
    path = tmp_path_factory.mktemp("deconv_stack") / "nuclei.tif"
    data = simulate_stack((12, 40, 52), kind="nuclei", seed=3, z_step_um=VOXEL[0], xy_step_um=VOXEL[1])
    write_stack(path, data, "ZYX", VoxelSize(VOXEL[0], VOXEL[1], VOXEL[1]))
    return path


def save_tiny_checkpoint(path: Path, volume: np.ndarray, seed: int = 0, net: dict | None = None) -> Path:
    """A ZS-DeconvNet checkpoint as ``zaugnet deconv train`` writes it (the training checkpoint code, the trainer's
    keys): a tiny network with random weights, the affine of ``volume``, 5 steps of history."""
    torch.manual_seed(seed)
    config = build_deconv_config({"preset": "small", "psf": {"na": 1.0, "wavelength": 0.5, "ni": 1.333},
                                  "net": net or TINY_NET})
    network = ZSDeconvNet3D(config.net)
    return save_checkpoint(path, {
        "kind": FAMILY, "config": config.to_dict(), "step": 5, "network": network.state_dict(), "optimizer": {},
        "history": [{"step": 5, "loss": 0.5, "val_loss": 0.4}], "pending": {},
        "affine": Affine.from_volumes([volume]).to_dict(), "voxel_size": [float(v) for v in VOXEL],
        "psf": torch.ones(1, 1, 1), "data": ["nuclei.tif"]})


@pytest.fixture(scope="module")
def checkpoint(stack: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("deconv_run") / "final.pt", read_stack(stack).data)


@pytest.fixture(scope="module")
def exported(checkpoint: Path, stack: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``(package folder, CLI output)`` of ``zaugnet export final.pt -o FOLDER --sample stack.tif``."""
    folder = tmp_path_factory.mktemp("deconv_pkg") / "zs_deconvnet"
    torch.set_num_threads(1)
    from contextlib import redirect_stdout
    from io import StringIO

    out = StringIO()
    with redirect_stdout(out):
        rc = main(["export", str(checkpoint), "-o", str(folder), "--sample", str(stack)])
    assert rc == 0, out.getvalue()
    return folder, out.getvalue()


def _rdf(folder: Path) -> dict:
    return yaml.safe_load((folder / "rdf.yaml").read_text())


def _reference(stack: Path, checkpoint: Path, tmp: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(denoised, deconvolved)`` of ``zaugnet deconv predict STACK --model CHECKPOINT`` (float32 ZYX)."""
    out = tmp / "reference.tif"
    assert main(["deconv", "predict", str(stack), "-o", str(out), "--model", str(checkpoint), "--method", "model",
                 "--device", "cpu", "--quiet"]) == 0
    return read_stack(tmp / "reference_denoised.tif").data, read_stack(out).data


# ------------------------------------------------------------------------------------ the package
def test_export_writes_a_deconv_package_through_the_cli(exported: tuple[Path, str], checkpoint: Path) -> None:
    """The CLI dispatches on the checkpoint's kind; the rdf: one 5D input ``raw``, outputs ``denoised`` and
    ``deconvolved`` of its size with the halo, the fixed affine as scale_linear (and its inverse), constant padding
    at the offset, TorchScript + ONNX, deepImageJ's form (format 0.5.10, plain documentation and cover, an id)."""
    folder, printed = exported
    assert f"wrote {folder} (bioimageio.core test passed)" in printed
    model = load_deconv_network(checkpoint)
    a = model.affine
    rdf = _rdf(folder)
    assert rdf["format_version"] == "0.5.10" and "format_version: \"0.5.10\"" in (folder / "rdf.yaml").read_text()
    assert rdf["documentation"] == "README.md" and rdf["covers"] == ["cover.png"] and rdf["id"]
    assert rdf["cite"][0]["doi"] == "10.1038/s41467-024-48575-9"
    (inp,) = rdf["inputs"]
    assert inp["id"] == "raw"
    assert [ax["type"] for ax in inp["axes"]] == ["batch", "channel", "space", "space", "space"]
    assert [ax.get("id") for ax in inp["axes"][2:]] == ["z", "y", "x"]
    assert [ax["size"] for ax in inp["axes"][2:]] == [{"min": m, "step": 1} for m in MIN_SIZES]
    assert MIN_SIZES == (9, 33, 33) and HALO == (4, 16, 16)  # min > 2 x halo (the format); z at least 8 (the note)
    assert inp["pad"]["value"] == pytest.approx(a.offset) and inp["pad"].get("mode", "constant") == "constant"
    scale = [p for p in inp["preprocessing"] if p["id"] == "scale_linear"]
    assert [p["id"] for p in inp["preprocessing"] if p["id"] != "ensure_dtype"] == ["scale_linear"]  # spec adds them
    assert scale[0]["kwargs"] == pytest.approx({"gain": 1 / a.scale, "offset": -a.offset / a.scale})
    assert [o["id"] for o in rdf["outputs"]] == list(OUTPUT_IDS)
    for out in rdf["outputs"]:
        assert [ax.get("halo") for ax in out["axes"][2:]] == list(HALO)
        assert [ax["size"] for ax in out["axes"][2:]] == [{"tensor_id": "raw", "axis_id": i, "offset": 0}
                                                          for i in "zyx"]
        post = [p for p in out["postprocessing"] if p["id"] == "scale_linear"]
        assert len(post) == 1 and {p["id"] for p in out["postprocessing"]} <= {"scale_linear", "ensure_dtype"}
        assert post[0]["kwargs"] == pytest.approx({"gain": a.scale, "offset": a.offset})
    assert sorted(rdf["weights"]) == ["onnx", "torchscript"] and rdf["weights"]["onnx"]["parent"] == "torchscript"
    zconfig = rdf["config"]["zaugnet"]
    assert zconfig["family"] == FAMILY and "variant" not in zconfig
    assert zconfig["normalization"]["offset"] == pytest.approx(a.offset)
    assert zconfig["voxel_size_um"] == {"z": VOXEL[0], "xy": VOXEL[1]}
    assert zconfig["receptive_radius"] == model.receptive_radius == 42
    assert zconfig["training"]["net"]["channels"] == 4 and zconfig["checkpoint"] == {"step": 5, "file": "final.pt"}
    assert max(zconfig["export_checks"]["onnx_max_error"]) <= TOLERANCE
    assert rdf["config"]["bioimageio"]["reproducibility_tolerance"][0]["absolute_tolerance"] == \
        pytest.approx(TOLERANCE * a.scale)
    doc = (folder / "README.md").read_text()
    assert "# Validation" in doc and "scale_linear" in doc and "zs_deconvnet.ijm" in doc
    for name in ("test_input.npy", "test_output_denoised.npy", "test_output_deconvolved.npy", "sample_input.tif",
                 "zs_deconvnet.onnx", "zs_deconvnet_torchscript.pt", "cover.png"):
        assert (folder / name).is_file(), name
    test_input = np.load(folder / "test_input.npy")
    assert test_input.shape == (1, 1, 12 + 2 * HALO[0], 40 + 2 * HALO[1], 52 + 2 * HALO[2])  # padded by the halo
    assert np.all(test_input[0, 0, :HALO[0]] == np.float32(a.offset))
    from PIL import Image

    with Image.open(folder / "cover.png") as cover:
        assert cover.size[0] == 2 * cover.size[1] and cover.mode == "RGB"


def test_zaugnet_s_loader_refuses_the_deconv_package_for_interpolation(exported: tuple[Path, str]) -> None:
    from zaugnet.export.load import load_interpolator

    with pytest.raises(InputError, match="one input and one output tensor"):  # its two outputs
        load_interpolator(str(exported[0]))


@pytest.mark.slow
def test_bioimageio_core_test_passes(exported: tuple[Path, str]) -> None:
    """bioimageio.core's test (Python API and ``bioimageio test``) passes: no failed check, the only warning the
    offline-unavoidable one about maintainers; inference ran for both weight formats."""
    folder = exported[0]
    verdict = run_bioimageio_test(folder / "rdf.yaml", accept=(NO_MAINTAINER_WARNING,))
    assert verdict.passed, verdict.problems
    assert len(verdict.accepted) == 1
    run = subprocess.run([BIOIMAGEIO, "test", f"./{folder.name}"], cwd=folder.parent, capture_output=True, check=False,
                         text=True, timeout=600)
    text = run.stdout + run.stderr
    assert run.returncode == 0, text[-3000:]
    end = re.search(r"^Recommended Conda Environment", text, flags=re.MULTILINE)
    table = text[text.index("bioimageio format validation"):end.start() if end else None]
    assert re.search(r"status\s+passed", table) and "\u274c" not in table, table[-3000:]
    warnings = [line for line in table.splitlines() if "\u26a0" in line]
    assert len(warnings) == 1 and "Missing maintainers" in warnings[0], warnings
    for wf in ("onnx", "torchscript"):
        assert f"Run {wf} inference for inputs with" in " ".join(table.split()), wf
        assert f"Reproduce test outputs from test inputs ({wf})" in " ".join(table.split()), wf


def test_deepimagej_s_reader_accepts_the_rdf(exported: tuple[Path, str]) -> None:
    """JDLL 0.6.1's reader (deepImageJ 3.1): one 5D input with the halo and ONE pre-processing step it runs
    (scale_linear; it skips ensure_dtype), two outputs with their post-processing, ONNX first."""
    if not READ_RDF.is_file():
        pytest.skip(f"{READ_RDF} not found")
    run = subprocess.run(["bash", str(READ_RDF), str(exported[0])], capture_output=True, text=True, timeout=300,
                         check=False)
    if run.returncode == 3:  # javac/java or a jar missing: the tool names the Debian packages
        pytest.skip(run.stderr.strip())
    assert run.returncode == 0, run.stdout + run.stderr
    block = run.stdout
    assert block.startswith("OK ") and "format_version: 0.5.10" in block and "documentation: README.md" in block
    assert re.search(r"axes=bczyx dtype=float32 min=\[1, 1, 9, 33, 33\] step=\[0, 0, 1, 1, 1\] "
                     r"halo=\[0, 0, 4, 16, 16\]", block), block
    assert "preprocessing=1 [scale_linear]" in block
    assert "outputs: 2" in block and block.count("postprocessing=1 [scale_linear]") == 2
    assert "size_ref=[-, -, z=raw.z*1.0+0.0, y=raw.y*1.0+0.0, x=raw.x*1.0+0.0]" in block
    assert "first_candidate: onnx_v17" in block and "tiling_allowed: true" in block


def test_torchscript_and_onnx_match_the_eager_network(exported: tuple[Path, str], checkpoint: Path,
                                                      stack: Path) -> None:
    """The package's TorchScript and ONNX files against the eager network of the checkpoint, run on the odd and the
    even slices apart (ParitySplit), on a normalised test volume (batch 2, a size not seen at export): both
    outputs within 1e-4 (of the affine's scale)."""
    folder = exported[0]
    model = load_deconv_network(checkpoint)
    volume = model.affine.normalise(read_stack(stack).data)[1:12, 2:39, 1:48]
    batch = np.ascontiguousarray(np.stack([volume, volume[::-1, ::-1]])[:, None])
    with torch.no_grad():
        want = [t.numpy() for t in ParitySplit(model.network)(torch.from_numpy(batch))]
    scripted = load_torchscript(folder / "zs_deconvnet_torchscript.pt")
    with torch.no_grad():
        ts = [t.numpy() for t in scripted(torch.from_numpy(batch))]
    onnx = run_onnx_all(onnx_session(folder / "zs_deconvnet.onnx"), batch)
    assert [o.shape for o in onnx] == [o.shape for o in ts] == [batch.shape] * 2
    assert max_abs_error(ts, want, batch) <= TOLERANCE
    assert max_abs_error(onnx, want, batch) <= TOLERANCE
    assert float(np.std(want[1])) > 0  # a real prediction
    wrapped = TwoStageNetwork(model.network.denoiser, model.network.deconvolver)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(wrapped(torch.from_numpy(batch)),
                                                     model.network(torch.from_numpy(batch))))


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["onnx", "torchscript"])
def test_the_package_predicts_what_zaugnet_deconv_predict_does(weights: str, exported: tuple[Path, str],
                                                               checkpoint: Path, stack: Path,
                                                               tmp_path: Path) -> None:
    """``bioimageio predict`` (halo padding with the offset, pre-processing, network, post-processing, crop) on
    the raw stack equals ``zaugnet deconv predict --model final.pt`` in the user's units, both outputs."""
    folder = exported[0]
    raw = read_stack(stack).data.astype(np.float32)
    np.save(tmp_path / "raw.npy", raw[None, None])
    # one --outputs per output tensor: bioimageio.core 0.11's CLI takes a single --outputs value as a list of one
    outputs = [arg for o in OUTPUT_IDS for arg in ("--outputs", str(tmp_path / "out" / f"{o}.npy"))]
    run = subprocess.run([BIOIMAGEIO, "predict", str(folder), "--inputs", str(tmp_path / "raw.npy"), *outputs,
                          "--weight-format", weights], capture_output=True, text=True, timeout=600,
                         check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    denoised, deconvolved = _reference(stack, checkpoint, tmp_path)
    scale = load_deconv_network(checkpoint).affine.scale
    for name, want in (("denoised", denoised), ("deconvolved", deconvolved)):
        got = np.load(tmp_path / "out" / f"{name}.npy")
        assert got.shape == (1, 1, *raw.shape), (name, got.shape)
        diff = float(np.abs(got[0, 0].astype(np.float64) - want).max())
        assert diff <= TOLERANCE * scale, (name, diff, scale)


class _RunsCode:
    """Unpickling this runs a command: the proof that a load executed the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused(checkpoint: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A ZS-DeconvNet checkpoint holding a pickled object that runs a command: refused (by the CLI and by
    export_deconv_model), the command never runs, nothing is written."""
    state = torch.load(checkpoint, weights_only=True)
    marker = tmp_path / "pwned"
    evil = tmp_path / "final.pt"
    torch.save({**state, "history": [_RunsCode(marker)]}, evil)
    out = tmp_path / "pkg"
    assert main(["export", str(evil), "-o", str(out)]) != 0
    assert "refused" in capsys.readouterr().err
    with pytest.raises(InputError, match="refused"):
        export_deconv_model(evil, out)
    assert not marker.exists() and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.pt"]


# ------------------------------------------------------------------------------------ the Fiji macro
def test_the_macro_is_generated_with_the_zaugnet_macros_helpers() -> None:
    """zs_deconvnet.ijm is what generate_macros.py writes from zs_deconvnet.ijm.in; its helpers are zaugnet.ijm's,
    character for character; deepImageJ is called from exactly one function, once per stack."""
    generator = macro_generator()
    text = DECONV_IJM.read_text()
    assert text == generator.render(generator.DECONV_MACRO), "stale: run python fiji_macros/generate_macros.py"
    assert generator.functions(text, generator.SHARED_FUNCTIONS) == \
        generator.functions((MACROS / "zaugnet.ijm").read_text(), generator.SHARED_FUNCTIONS)
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    assert code.count('run("DeepImageJ Run"') == 1 and code.count("zaRunDeepImageJ(model, file, outDir);") == 1
    assert "master / 3.1.x" in text
    assert subprocess.run([sys.executable, str(MACROS / "generate_macros.py"), "--check"], check=False).returncode == 0


def _leftovers(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith(("zaugnet_tmp_", "dij_standin_")))


@pytest.mark.imagej
@pytest.mark.slow
def test_the_macro_deconvolves_a_stack_in_one_deepimagej_call(standin: Path, exported: tuple[Path, str],
                                                              checkpoint: Path, stack: Path, tmp_path: Path) -> None:
    """ImageJ 1.53t runs the macro for real (checks, the 32-bit z-stack file, the deepImageJ call and its output
    files, voxel size, clean-up); the stand-in answers deepImageJ's call with ``bioimageio predict`` (ONNX, JDLL's
    first choice) on the package. ONE call with the whole stack as a (1, 1, z, y, x) tensor; both results equal
    ``zaugnet deconv predict`` within 1e-4 of the affine's scale; 32-bit; the voxel size kept."""
    out, den = tmp_path / "deconvolved.tif", tmp_path / "denoised.tif"
    log = run_imagej(DECONV_IJM, f"model={exported[0]} input={stack} output={out} denoised={den}",
                      standin, tmp_path / "ij")
    calls = re.findall(r"^DeepImageJ Run \(test stand-in\): (\S+) -> input \((\d+), (\d+), (\d+), (\d+), (\d+)\), "
                       r"weights (\S+) -> bioimageio predict -> (.*)$", log, flags=re.MULTILINE)
    assert calls == [("raw", "1", "1", "12", "40", "52", "onnx", "raw_deconvolved.tif raw_denoised.tif")], log
    assert "zs_deconvnet.ijm: deconvolved 12 slices of 52x40 and the denoised stack in 1 deepImageJ call(s)" in log
    want_denoised, want = _reference(stack, checkpoint, tmp_path)
    scale = load_deconv_network(checkpoint).affine.scale
    given = read_stack(stack)
    for path, reference in ((out, want), (den, want_denoised)):
        got = read_stack(path)
        assert got.data.dtype == np.float32 and got.data.shape == reference.shape == given.data.shape
        assert float(np.abs(got.data.astype(np.float64) - reference).max()) <= TOLERANCE * scale, path
        assert (got.voxel_size.z, got.voxel_size.y, got.voxel_size.x) == pytest.approx(
            (given.voxel_size.z, given.voxel_size.y, given.voxel_size.x), rel=1e-5)
    assert _leftovers(tmp_path / "ij") == []
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and tif.imagej_metadata.get("slices") == 12


@pytest.mark.imagej
def test_the_macro_refuses_a_package_that_is_not_zs_deconvnet(standin: Path, exported: tuple[Path, str],
                                                              stack: Path, tmp_path: Path) -> None:
    """A package without ``config.zaugnet.family: zs-deconvnet-3d`` (e.g. a ZAugNet one): a clear message naming
    the ZAugNet macros, deepImageJ never called, no result, nothing left behind."""
    folder = tmp_path / "other"
    shutil.copytree(exported[0], folder)
    rdf = (folder / "rdf.yaml").read_text()
    (folder / "rdf.yaml").write_text(rdf.replace(f"family: {FAMILY}", "variant: zaugnet"))
    out = tmp_path / "out.tif"
    log = run_imagej(DECONV_IJM, f"model={folder} input={stack} output={out}", standin, tmp_path / "ij")
    assert "zs_deconvnet.ijm: error: the model in" in log and "not a ZS-DeconvNet package" in log, log
    assert "zaugnet.ijm" in log and "DeepImageJ Run (test stand-in):" not in log
    assert not out.exists() and _leftovers(tmp_path / "ij") == []


def test_in_a_real_fiji_with_deepimagej(fiji_home: str, exported: tuple[Path, str], checkpoint: Path, stack: Path,
                                        tmp_path: Path) -> None:
    """Opt-in (FIJI_HOME): the macro in a real Fiji.app with deepImageJ, through pyimagej, against ``zaugnet deconv
    predict``: one deepImageJ call; deepImageJ may tile and pad borders its own way, so 1e-3 of the scale."""
    out = tmp_path / "deconvolved.tif"
    done = subprocess.run([sys.executable, str(Path(__file__).parent / "imagej" / "run_in_fiji.py"), fiji_home,
                           str(DECONV_IJM), f"model={exported[0]} input={stack} output={out}"],
                          check=False, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0 and out.is_file(), done.stdout + done.stderr
    assert "in 1 deepImageJ call(s)" in done.stdout
    _, want = _reference(stack, checkpoint, tmp_path)
    scale = load_deconv_network(checkpoint).affine.scale
    assert float(np.abs(read_stack(out).data.astype(np.float64) - want).max()) <= 1e-3 * scale


def test_the_paper_s_rcan_exports_too(stack: Path, tmp_path: Path) -> None:
    checkpoint = save_tiny_checkpoint(tmp_path / "rcan.pt", read_stack(stack).data, net=TINY_RCAN)

    folder = export_deconv_model(checkpoint, tmp_path / "rcan_pkg", sample=read_stack(stack).data)

    assert _rdf(folder)["config"]["zaugnet"]["family"] == FAMILY  # written only after every check passed
    ts = load_torchscript(folder / "zs_deconvnet_torchscript.pt")
    x = torch.rand(1, 1, 9, 33, 35)
    eager = ParitySplit(load_deconv_network(checkpoint).network)(x)
    for a, b in zip(ts(x), eager):
        assert float((a - b).abs().max()) <= 1e-5
