"""``zaugnet export`` from the command line: a tested package, or one clear error and nothing written."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import yaml
from support import listing

from zaugnet.cli import main


@pytest.mark.bioimageio
def test_export_command_writes_a_tested_package_that_predict_accepts(tiny_checkpoints: dict[str, Path],
                                                                     phantom_dir: Path, tmp_path: Path) -> None:
    pkg = tmp_path / "pkg.zip"
    sample = sorted(phantom_dir.glob("*.tif"))[0]
    table = tmp_path / "validation.md"
    table.write_text("| stack | PSNR |\n|---|---|\n| held-out phantom | 31.41 |\n")
    figure = tmp_path / "curves.png"
    figure.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    assert main(["export", str(tiny_checkpoints["zaugnet+"]), "-o", str(pkg), "--sample", str(sample),
                 "--documentation", str(table), "--figure", str(figure)]) == 0
    with zipfile.ZipFile(pkg) as zf:
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
        documentation = zf.read(rdf["documentation"]).decode()
        names = zf.namelist()
    assert rdf["format_version"].startswith("0.5") and [i["id"] for i in rdf["inputs"]]
    assert {"torchscript", "onnx", "pytorch_state_dict"} <= set(rdf["weights"])
    assert "| held-out phantom | 31.41 |" in documentation and "curves.png" in documentation
    attached = [a["source"] for a in rdf["attachments"]]
    assert len(attached) == 1 and attached[0].endswith("curves.png") and attached[0] in names
    assert f"]({attached[0]})" in documentation
    out = tmp_path / "out.tif"
    assert main(["predict", str(sample), "-o", str(out), "--model", str(pkg), "--method", "model", "--factor", "3",
                 "--quiet"]) == 0
    assert out.is_file()


def test_export_of_something_that_is_not_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "model.pt"
    bogus.write_text("not a model")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert main(["export", str(bogus), "-o", str(out_dir / "pkg.zip")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zaugnet: error:") and "model.pt" in err[0]
    assert listing(out_dir) == []
