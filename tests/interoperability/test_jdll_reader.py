"""deepImageJ 3.1 can read our packages: ``../shared/tools/jdll-rdf/read-rdf`` runs JDLL 0.6.1's own rdf reader
(``ModelDescriptorFactory.readFromLocalFile``, what deepImageJ 3.1 calls) on the shipped packages and on a freshly
exported one. Skips, with the tool's reason, where the tool or Java is missing."""

from __future__ import annotations

import re
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml
from zaugnet.export.load import SHIPPED_MODELS

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO.parent / "shared" / "tools" / "jdll-rdf" / "read-rdf"
#: Package folder -> its input channels.
SHIPPED = {"zaugnet": 2, "zaugnet_plus": 3, "zaugnet_c": 5}
#: JDLL's weights, in the order it tries them (its HashMap order for our three keys): ONNX first.
WEIGHT_ORDER = ["onnx", "pytorch_state_dict", "torchscript"]


def read_rdf(*paths: Path) -> str:
    """read-rdf's output for ``paths`` (all must be OK); skip where the tool cannot run here."""
    if not TOOL.is_file():
        pytest.skip(f"{TOOL} not found")
    run = subprocess.run(["bash", str(TOOL), *map(str, paths)], capture_output=True, text=True, timeout=300)
    if run.returncode == 3:  # javac/java or a jar missing: the tool names the Debian packages
        pytest.skip(run.stderr.strip())
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def fields(block: str) -> dict[str, str]:
    """``key: value`` lines of one file's block (two-space indented), keyed by the key."""
    return dict(m.groups() for m in re.finditer(r"^  (\w+): (.*)$", block, flags=re.M))


def check_block(block: str, rdf: dict, n_channels: int) -> None:
    """What deepImageJ needs from JDLL's reading, against the rdf."""
    assert block.startswith("OK "), block
    f = fields(block)
    assert f["name"] == rdf["name"]
    assert f["id"] == f["nickname"] == rdf["id"]  # not JDLL's made-up friend-N
    assert f["format_version"] == "0.5.10" and f["type"] == "model"
    assert f["documentation"] == "README.md" and f["covers"] == "[cover.png]"
    assert f["tiling_allowed"] == "true" and f["pyramidal"] == "false"
    assert f["inputs"].split()[0] == "1" and f["outputs"].split()[0] == "1"
    assert re.search(rf"^    axes=bcyx dtype=float32 min=\[1, {n_channels}, 32, 32\] step=\[0, 0, 16, 16\] "
                     r"halo=\[0, 0, 0, 0\]", block, flags=re.M), block
    assert "test_tensor=test_input.npy sample_tensor=sample_input.tif preprocessing=0 []" in block
    assert "size_ref=[-, -, y=input.y*1.0+0.0, x=input.x*1.0+0.0]" in block
    assert "test_tensor=test_output.npy sample_tensor=sample_output.tif postprocessing=0 []" in block
    weights = re.findall(r"^    \d\. (\w+?)_v\S+: format=(\w+) .* source=(\S+) \((\w+)\)$", block, flags=re.M)
    assert [w[1] for w in weights] == WEIGHT_ORDER, block
    assert all(w[3] == "present" and w[2] == rdf["weights"][w[1]]["source"] for w in weights), weights
    assert "1. onnx_v17: format=onnx training_version=17 jdll_engine_version=1.12.1 java_engine=onnx" in block
    assert "java_engine=pytorch" in block.split("3. torchscript_v")[1].splitlines()[0]
    assert f["runner"] == "java engines (BioimageIoModelJava)"
    assert f["first_candidate"].split()[0] == "onnx_v17"


def blocks(output: str) -> list[str]:
    """read-rdf's output split per file (each block starts with OK or FAIL)."""
    return [b for b in re.split(r"^(?=OK |FAIL )", output, flags=re.M) if b.strip()]


def test_deepimagej_reads_every_shipped_package() -> None:
    out = blocks(read_rdf(*(SHIPPED_MODELS / f for f in SHIPPED)))
    assert len(out) == len(SHIPPED)
    for block, (folder, n_channels) in zip(out, SHIPPED.items()):
        assert block.startswith(f"OK {SHIPPED_MODELS / folder}"), block
        rdf = yaml.safe_load((SHIPPED_MODELS / folder / "rdf.yaml").read_text())
        check_block(block, rdf, n_channels)


@pytest.mark.parametrize("variant", ["zaugnet", "zaugnet+", "zaugnet-c"])
def test_deepimagej_reads_a_freshly_exported_package(variant: str, packages, tmp_path: Path) -> None:
    """The export writes the rdf deepImageJ reads (read-rdf takes a folder: the zip unpacked)."""
    folder = tmp_path / "pkg"
    with zipfile.ZipFile(packages[variant]) as zf:
        zf.extractall(folder)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    (block,) = blocks(read_rdf(folder))
    check_block(block, rdf, {"zaugnet": 2, "zaugnet+": 3, "zaugnet-c": 5}[variant])


def test_the_reader_still_refuses_the_form_bioimageio_spec_writes(tmp_path: Path) -> None:
    """The check is not vacuous: the shipped rdf with ``documentation`` as spec's ``{source, sha256}`` mapping
    FAILs in JDLL, as it did before issue 16."""
    rdf = (SHIPPED_MODELS / "zaugnet" / "rdf.yaml").read_text()
    assert "\ndocumentation: README.md\n" in rdf
    (tmp_path / "rdf.yaml").write_text(rdf.replace("\ndocumentation: README.md\n",
                                                   "\ndocumentation:\n  source: README.md\n  sha256: ab\n"))
    if not TOOL.is_file():
        pytest.skip(f"{TOOL} not found")
    run = subprocess.run(["bash", str(TOOL), str(tmp_path)], capture_output=True, text=True, timeout=300)
    if run.returncode == 3:
        pytest.skip(run.stderr.strip())
    assert run.returncode == 1 and run.stdout.startswith("FAIL ") and "ClassCastException" in run.stdout
