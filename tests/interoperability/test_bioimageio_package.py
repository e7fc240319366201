"""BioImage.IO packages: content of the rdf, ``bioimageio test`` / ``bioimageio predict`` (real CLI), parity of
the runtimes, and the export refusing to write anything when a check does not pass."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from support import assert_bioimageio_test_passed, listing
from zaugnet.export.bioimageio import (
    JDLL_FORMAT_VERSION,
    NO_MAINTAINER_WARNING,
    PAPER,
    PAPER_DATA,
    Verdict,
    channel_names,
    export_model,
    jdll_compatible_rdf,
    judge_summary,
    model_id_from_name,
)
from zaugnet.export.load import from_checkpoint, load_interpolator
from zaugnet.export.onnx import onnx_session, run_onnx
from zaugnet.export.parity import TOLERANCE, relative_error
from zaugnet.export.torchscript import load_torchscript

from zaugnet.cli import main
from zaugnet.errors import InputError
from zaugnet.gaps import context_indices
from zaugnet.io.tiff import VoxelSize, read_stack, write_stack

pytestmark = pytest.mark.bioimageio

VARIANTS = ("zaugnet", "zaugnet+", "zaugnet-c")
#: Image channels per gap (ZAugNet-C: K = 4, the tiny checkpoints' context_slices).
N_SLICES = {"zaugnet": 2, "zaugnet+": 2, "zaugnet-c": 4}

BIOIMAGEIO = str(Path(sys.executable).with_name("bioimageio"))
#: Sizes (batch, y, x) for the four-runtime comparison: valid package sizes (bioimageio.core refuses others) ...
PACKAGE_SHAPES = [(1, 48, 80), (2, 64, 32), (1, 96, 96)]
#: ... and sizes only ZAugNet's own predictor, TorchScript and ONNX Runtime take (not multiples of 16).
FREE_SHAPES = [(1, 37, 53), (2, 100, 30)]


def slug(variant: str) -> str:
    return variant.replace("+", "_plus").replace("-", "_")


def _rdf(package: Path) -> dict:
    with zipfile.ZipFile(package) as zf:
        return yaml.safe_load(zf.read("rdf.yaml"))


def _pairs(stack: np.ndarray, shape: tuple[int, int, int], variant: str) -> np.ndarray:
    """``(B, C, y, x)`` float32 inputs cut from a phantom stack; sample i uses slices (i, i + 2), or for
    ZAugNet-C the K slices around the gap (i, i + 1), the edge slice repeated at the stack's ends."""
    b, h, w = shape
    k = N_SLICES[variant]
    out = []
    for i in range(b):
        idx = [i, i + 2] if k == 2 else list(context_indices(i, 1, k, 0, len(stack)))
        pair = stack[idx, 3 * i:3 * i + h, 5 * i:5 * i + w].astype(np.float32)
        planes = [pair] + ([np.full((1, h, w), 0.25 + 0.5 * i, np.float32)] if variant != "zaugnet" else [])
        out.append(np.concatenate(planes))
    return np.stack(out)


def _architecture_network(package_folder: Path, rdf: dict) -> torch.nn.Module:
    """The ``pytorch_state_dict`` weights through the package's OWN generated architecture file, as
    bioimageio.core rebuilds them: import the file, call the callable with the rdf's kwargs, load the state dict."""
    entry = rdf["weights"]["pytorch_state_dict"]
    arch = entry["architecture"]
    spec = importlib.util.spec_from_file_location(f"arch_{package_folder.name}", package_folder / arch["source"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    network = getattr(module, arch["callable"])(**arch["kwargs"])
    network.load_state_dict(torch.load(package_folder / entry["source"], weights_only=True))
    return network.eval()


@pytest.fixture(scope="module")
def parity_stack() -> np.ndarray:
    from zaugnet.phantoms import simulate_stack

    return simulate_stack((4, 110, 110), kind="membrane", seed=11)


# ------------------------------------------------------------------------------------ rdf
@pytest.mark.parametrize("variant", VARIANTS)
def test_package_describes_the_student_for_bioimageio_and_deepimagej(variant: str, packages) -> None:
    rdf = _rdf(packages[variant])
    with_dpm = variant != "zaugnet"
    # the form deepImageJ 3.1 (JDLL 0.6.1) reads: a quoted "0.5.10", plain file names, an id
    with zipfile.ZipFile(packages[variant]) as zf:
        text = zf.read("rdf.yaml").decode()
    assert f'\nformat_version: "{JDLL_FORMAT_VERSION}"\n' in text and rdf["type"] == "model"
    assert rdf["documentation"] == "README.md" and rdf["covers"] == ["cover.png"]
    assert rdf["id"] == model_id_from_name(rdf["name"]) and rdf["id"].startswith(slug(variant).replace("_", "-"))
    assert rdf["name"] and rdf["description"] and rdf["authors"] and rdf["license"] == "MIT" and rdf["version"]
    assert "github_user" not in str(rdf["authors"]) and rdf.get("maintainers", []) == []
    assert any("ZAugNet for Z-Slice Augmentation" in c["text"] and c["url"].startswith("https://arxiv.org/abs/")
               and c["doi"] == PAPER["doi"] == "10.48550/arXiv.2503.04843" for c in rdf["cite"])
    assert any(c.get("doi") == PAPER_DATA["doi"] == "10.5281/zenodo.14961732" for c in rdf["cite"])
    assert rdf["links"] == ["deepimagej/deepimagej"] and "training_data" not in rdf
    assert {"deepimagej", "pytorch", "2d", "fluorescence-light-microscopy"} <= set(rdf["tags"])
    (inp,), (out,) = rdf["inputs"], rdf["outputs"]
    channels = {"zaugnet": ["slice_0", "slice_1"], "zaugnet+": ["slice_0", "slice_1", "dpm"],
                "zaugnet-c": ["slice_m1", "slice_0", "slice_1", "slice_2", "dpm"]}[variant]
    assert channel_names(N_SLICES[variant], with_dpm) == channels
    assert [a["type"] for a in inp["axes"]] == ["batch", "channel", "space", "space"]
    assert inp["axes"][1]["channel_names"] == channels
    assert [a.get("id") for a in inp["axes"][2:]] == ["y", "x"]
    assert all(a["size"] == {"min": 32, "step": 16} for a in inp["axes"][2:])
    assert out["axes"][1]["channel_names"] == ["slice_z"]
    for axis, name in zip(out["axes"][2:], ("y", "x")):
        assert axis["id"] == name and "halo" not in axis
        assert axis["size"] == {"tensor_id": inp["id"], "axis_id": name, "offset": 0}
    assert not inp.get("preprocessing") and not out.get("postprocessing")
    weights = rdf["weights"]
    assert set(weights) == {"pytorch_state_dict", "torchscript", "onnx"}
    assert "parent" not in weights["pytorch_state_dict"]
    assert weights["torchscript"]["parent"] == weights["onnx"]["parent"] == "pytorch_state_dict"
    assert 16 <= weights["onnx"]["opset_version"] <= 18
    assert weights["pytorch_state_dict"]["architecture"]["source"].endswith(".py")
    zconf = rdf["config"]["zaugnet"]
    assert zconf["variant"] == variant and zconf["training"]["net"]["variant"] == variant
    assert zconf["onnx"]["ir_version"] <= 8 and zconf["torchscript_archive_version"] >= 1
    assert max(zconf["export_checks"]["onnx_max_error"]) <= TOLERANCE
    assert rdf["config"]["deepimagej"]["allow_tiling"] is True
    with zipfile.ZipFile(packages[variant]) as zf:
        names = set(zf.namelist())
        doc = zf.read(rdf["documentation"]).decode()
        cover = zf.read(rdf["covers"][0])
        test_input = np.load(zf.open(inp["test_tensor"]["source"]))
    assert "# Validation" in doc and f"format version {zconf['torchscript_archive_version']}" in doc
    assert "## deepImageJ and the BioImage.IO model zoo" in doc and f"`{rdf['id']}`" in doc
    assert "BIOIMAGEIO_PERFORM_IO_CHECKS=false bioimageio validate-format ./package" in doc and "training_data" in doc
    assert cover[:8] == b"\x89PNG\r\n\x1a\n"
    assert inp["sample_tensor"]["source"].endswith(".tif") and inp["test_tensor"]["source"].endswith(".npy")
    assert test_input.shape == (1, len(channels), 64, 96) and test_input.dtype == np.float32
    assert test_input[:, :2].max() > 1.0  # raw intensity units, not normalised
    assert {w["source"] for w in weights.values()} <= names
    if variant == "zaugnet-c":
        # K consecutive slices of the 3-slice sample around its middle gap (1, 2), the last one repeated
        assert np.array_equal(test_input[0, 2], test_input[0, 3]) and not np.array_equal(test_input[0, 1],
                                                                                         test_input[0, 2])
        assert np.all(test_input[0, 4] == np.float32(0.25))  # the DPM: sample_z
        assert weights["pytorch_state_dict"]["architecture"]["kwargs"]["context_slices"] == 4
        assert "zaugnet-c" in rdf["tags"] and rdf["name"] == "ZAugNet-C z-slice interpolation"
        assert "repeat the edge slice" in doc and "NOT clamped" in doc and "zaugnet_c.ijm" in doc


def test_jdll_form_keeps_everything_but_documentation_covers_and_format_version() -> None:
    spec_written = ("%YAML 1.2\n---\nname: A model\nid: a-model\ncovers:\n  - source: cover.png\n    sha256: ab\n"
                    "documentation:\n  source: README.md\n  sha256: cd\nattachments:\n  - source: f.png\n"
                    "    sha256: ef\nformat_version: 0.5.12\ntype: model\nweights:\n  onnx:\n"
                    "    source: m.onnx\n    sha256: '01'\n")
    text = jdll_compatible_rdf(spec_written)
    assert text == ('%YAML 1.2\n---\nname: A model\nid: a-model\ncovers:\n  - cover.png\ndocumentation: README.md\n'
                    'attachments:\n  - source: f.png\n    sha256: ef\nformat_version: "0.5.10"\ntype: model\n'
                    "weights:\n  onnx:\n    source: m.onnx\n    sha256: '01'\n")
    assert jdll_compatible_rdf(text) == text  # idempotent
    with pytest.raises(ValueError, match="no id"):
        jdll_compatible_rdf(spec_written.replace("id: a-model\n", ""))
    with pytest.raises(ValueError, match="format 0.5"):
        jdll_compatible_rdf(spec_written.replace("0.5.12", "0.6.0"))


def test_model_id_from_name() -> None:
    assert model_id_from_name("ZAugNet z-slice interpolation") == "zaugnet-z-slice-interpolation"
    assert model_id_from_name("ZAugNet+ z-slice interpolation") == "zaugnet-plus-z-slice-interpolation"
    assert model_id_from_name("ZAugNet-C z-slice interpolation") == "zaugnet-c-z-slice-interpolation"
    assert model_id_from_name("My_Model (v2)") == "my-model-v2"
    assert model_id_from_name("(+)") == "plus" and model_id_from_name("( )") == "zaugnet-model"


@pytest.mark.parametrize("variant", VARIANTS)
def test_cover_is_an_input_output_pair_without_text(variant: str, packages) -> None:
    """2:1, left the gap's two input slices overlaid (slice_0 magenta, slice_1 green), right the prediction in
    grey, at least 256 px high; rebuilt from the package's test tensors it is the same image."""
    import matplotlib.image
    from zaugnet.export.bioimageio import _write_cover

    rdf = _rdf(packages[variant])
    with zipfile.ZipFile(packages[variant]) as zf:
        cover = matplotlib.image.imread(zf.open(rdf["covers"][0]), format="png")
        test_input = np.load(zf.open(rdf["inputs"][0]["test_tensor"]["source"]))
        test_output = np.load(zf.open(rdf["outputs"][0]["test_tensor"]["source"]))
    h, w = cover.shape[:2]
    assert w == 2 * h and h >= 256 and cover.shape[2] == 3
    left, right = cover[:, : w // 2], cover[:, w // 2:]
    assert np.array_equal(left[..., 0], left[..., 2]) and not np.array_equal(left[..., 0], left[..., 1])
    assert np.array_equal(right[..., 0], right[..., 1]) and np.array_equal(right[..., 0], right[..., 2])
    k = N_SLICES[variant]
    rebuilt = Path(packages[variant]).with_name(f"{slug(variant)}_cover.png")
    _write_cover(rebuilt, test_input[0, :k], test_output[0, 0])
    with zipfile.ZipFile(packages[variant]) as zf:
        assert rebuilt.read_bytes() == zf.read(rdf["covers"][0])


# ------------------------------------------------------------------------------------ CLI
@pytest.mark.slow
def test_bioimageio_test_cli_passes_for_every_variant(packages) -> None:
    """``bioimageio test ./PACKAGE.zip`` (with ./): exit 0, no failed check; the only warning is the
    offline-unavoidable one about maintainers (github_user) that the export accepts knowingly."""
    runs = {v: subprocess.Popen([BIOIMAGEIO, "test", f"./{packages[v].name}"], cwd=packages[v].parent,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for v in VARIANTS}
    for variant, proc in runs.items():
        text, _ = proc.communicate(timeout=300)
        assert_bioimageio_test_passed(proc.returncode, text)


@pytest.mark.slow
def test_runtimes_agree(packages, tiny_checkpoints, parity_stack: np.ndarray, tmp_path: Path) -> None:
    """Eager checkpoint predictor vs TorchScript vs ONNX Runtime vs ``pytorch_state_dict`` through the package's
    generated architecture file vs ``bioimageio predict`` (CLI), per size."""
    inputs, procs = {}, {}
    for variant in VARIANTS:
        folder = tmp_path / slug(variant)
        folder.mkdir()
        names = "abc"
        for name, shape in zip(names, PACKAGE_SHAPES):
            inputs[variant, shape] = _pairs(parity_stack, shape, variant)
            np.save(folder / f"{name}.npy", inputs[variant, shape])
        for shape in FREE_SHAPES:
            inputs[variant, shape] = _pairs(parity_stack, shape, variant)
        args = [BIOIMAGEIO, "predict", f"./{packages[variant].name}", "--outputs", str(folder / "out/{sample_id}.npy")]
        for name in names:
            args += ["--inputs", str(folder / f"{name}.npy")]
        procs[variant] = subprocess.Popen(args, cwd=packages[variant].parent, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True)
    report = []
    for variant in VARIANTS:
        with zipfile.ZipFile(packages[variant]) as zf:
            zf.extractall(tmp_path / f"{slug(variant)}_pkg")
        unpacked = tmp_path / f"{slug(variant)}_pkg"
        scripted = load_torchscript(unpacked / "zaugnet_torchscript.pt")
        session = onnx_session(unpacked / "zaugnet.onnx")
        state_dict = _architecture_network(unpacked, _rdf(packages[variant]))
        eager = from_checkpoint(str(tiny_checkpoints[variant]))
        k = N_SLICES[variant]
        assert eager.n_slices == k
        text, _ = procs[variant].communicate(timeout=300)
        assert procs[variant].returncode == 0, text[-3000:]
        for i, shape in enumerate(PACKAGE_SHAPES + FREE_SHAPES):
            x = inputs[variant, shape]
            z = list(x[:, k, 0, 0]) if variant != "zaugnet" else [0.5] * len(x)
            want = eager.predict_windows(x[:, :k], z)[:, None]
            with torch.no_grad():
                errors = {"torchscript": relative_error(scripted(torch.from_numpy(x)).numpy(), want, x),
                          "onnxruntime": relative_error(run_onnx(session, x), want, x),
                          "pytorch_state_dict": relative_error(state_dict(torch.from_numpy(x)).numpy(), want, x)}
            if shape in PACKAGE_SHAPES:
                cli = np.load(tmp_path / slug(variant) / "out" / f"{'abc'[i]}.npy")
                errors["bioimageio predict"] = relative_error(cli.reshape(want.shape), want, x)
            report.append(f"{variant} {shape}: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
            assert max(errors.values()) <= TOLERANCE, report[-1]
    print("\nmax abs error / intensity range vs the eager checkpoint predictor:\n  " + "\n  ".join(report))


@pytest.mark.parametrize("variant", VARIANTS)
def test_zaugnet_predict_with_the_package_equals_the_checkpoint(variant: str, packages, tiny_checkpoints,
                                                                tmp_path: Path) -> None:
    """``zaugnet predict STACK --model PACKAGE.zip --method model`` = the same with the training checkpoint, on a
    5-slice uint16 stack (ZAugNet-C: interior gaps and both edge gaps, where the edge slice is repeated)."""
    from zaugnet.phantoms import simulate_stack

    source = tmp_path / "stack.tif"
    data = simulate_stack((5, 40, 56), kind="membrane", seed=12, z_step_um=0.6)
    write_stack(source, data, "ZYX", VoxelSize(0.6, 0.2, 0.2))
    options = ["--factor", "2"] if variant == "zaugnet" else ["--z-positions", "0.25", "0.5", "0.75"]
    results = {}
    for label, model in (("package", packages[variant]), ("checkpoint", tiny_checkpoints[variant])):
        results[label] = tmp_path / f"{label}.tif"
        assert main(["predict", str(source), "-o", str(results[label]), "--model", str(model), "--method", "model",
                     *options, "--quiet", "--device", "cpu"]) == 0
    got, want = read_stack(results["package"]), read_stack(results["checkpoint"])
    step = 2 if variant == "zaugnet" else 4
    assert got.data.shape == want.data.shape == (4 * step + 1, 40, 56) and got.data.dtype == np.uint16
    np.testing.assert_array_equal(got.data[::step], data)
    span = float(data.max()) - float(data.min())
    assert np.abs(got.data.astype(np.int64) - want.data.astype(np.int64)).max() <= TOLERANCE * span + 1


# ------------------------------------------------------------------------------------ refusals
def _outcome_of(*warnings: tuple[str, int], failed: bool = False) -> Verdict:
    from bioimageio.spec.summary import (
        ErrorEntry,
        ValidationDetail,
        ValidationSummary,
        WarningEntry,
    )

    detail = ValidationDetail(name="check", status="failed" if failed else "passed",
                              errors=[ErrorEntry(loc=(), msg="broken", type="x")] if failed else [],
                              warnings=[WarningEntry(loc=("a",), msg=m, type="w", severity=s) for m, s in warnings])
    summary = ValidationSummary(name="t", source_name="s", type="model", format_version="0.5.12",
                                status="failed" if failed else "passed", details=[detail])
    return judge_summary(summary, accept=(NO_MAINTAINER_WARNING,))


def test_any_warning_or_failure_is_a_problem_except_the_accepted_one() -> None:
    from bioimageio.spec._internal.warning_levels import ALERT, INFO, WARNING

    assert _outcome_of((NO_MAINTAINER_WARNING, ALERT), ("all agree", INFO)).passed
    assert not _outcome_of(("No '# Validation' (sub)section found", WARNING)).passed
    assert not _outcome_of(("something", ALERT)).passed
    assert not _outcome_of(failed=True).passed


def test_export_refuses_and_leaves_nothing_when_the_test_does_not_pass(tiny_checkpoints, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import zaugnet.export.bioimageio as bio

    monkeypatch.setattr(bio, "run_bioimageio_test",
                        lambda source, accept=(): Verdict(["warning: x: y: something is off"], []))
    before = listing(tmp_path)
    with pytest.raises(InputError, match="something is off"):
        export_model(tiny_checkpoints["zaugnet"], tmp_path / "new" / "dirs" / "model.zip")
    assert listing(tmp_path) == before  # no package, no staging folder, no folders made for the output


def test_export_refuses_bad_inputs_before_doing_anything(tiny_checkpoints, tmp_path: Path) -> None:
    (tmp_path / "exists.zip").write_bytes(b"")
    with pytest.raises(InputError, match="exists"):
        export_model(tiny_checkpoints["zaugnet"], tmp_path / "exists.zip")
    with pytest.raises(InputError, match="sample"):
        export_model(tiny_checkpoints["zaugnet"], tmp_path / "a.zip", sample=np.zeros((3, 20, 20)))
    with pytest.raises(InputError, match="checkpoint"):
        export_model(tmp_path / "missing.pt", tmp_path / "b.zip")
    with pytest.raises(InputError, match="github_user"):
        export_model(tiny_checkpoints["zaugnet"], tmp_path / "c.zip", authors=[{"name": "A", "github_user": "a"}])
    with pytest.raises(InputError, match="not a valid BioImage.IO description"):
        export_model(tiny_checkpoints["zaugnet"], tmp_path / "d.zip", model_id="Not a valid id")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.zip"]


def test_folder_export_holds_the_same_files_and_loads(packages, tiny_checkpoints, export_sample,
                                                      tmp_path: Path) -> None:
    """A folder package (bioimageio test skipped here: the zip of the same export passed it)."""
    folder = export_model(tiny_checkpoints["zaugnet"], tmp_path / "pkg", sample=export_sample, test=False)
    with zipfile.ZipFile(packages["zaugnet"]) as zf:
        assert sorted(p.name for p in folder.iterdir()) == sorted(zf.namelist())
    x = export_sample.astype(np.float32)
    got = load_interpolator(str(folder)).predict(x[None, 0], x[None, 2], [0.5])
    want = from_checkpoint(str(tiny_checkpoints["zaugnet"])).predict(x[None, 0], x[None, 2], [0.5])
    assert relative_error(got[:, None], want[:, None], x[None, [0, 2]]) <= TOLERANCE
