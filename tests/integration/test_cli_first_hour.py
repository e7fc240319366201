"""What a newcomer meets in the first hour: help that explains every option with examples, a summary
line with units, ImageJ display settings kept, ``--threads``."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from zaugnet.cli import build_parser, main


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_subcommand_has_a_description_examples_and_help_for_every_option() -> None:
    commands = _subcommands()
    assert set(commands) == {"simulate", "train", "predict", "evaluate", "export", "psf", "deconv"}
    for name, command in commands.items():
        assert command.description and len(command.description) > 80, name
        assert command.epilog.startswith("examples:\n") and f"zaugnet {name} " in command.epilog, name
        undocumented = [a.dest for a in command._actions if not a.help]
        assert undocumented == [], (name, undocumented)


def test_help_names_the_defaults_a_user_asks_about() -> None:
    help_of = {name: {a.dest: a.help for a in c._actions} for name, c in _subcommands().items()}
    assert "default 4" in help_of["predict"]["batch_size"]
    assert "default 1024" in help_of["predict"]["tile"] and "default 128" in help_of["predict"]["halo"]
    assert "default paper" in help_of["train"]["preset"] and "GPU" in help_of["train"]["preset"]
    assert "missing folders are created" in help_of["predict"]["output"]


def _imagej_stack(path: Path) -> Path:
    data = np.random.default_rng(0).integers(0, 4000, (9, 32, 32)).astype(np.uint16)
    tifffile.imwrite(path, data, imagej=True, resolution=(5.0, 5.0), metadata={
        "axes": "ZYX", "spacing": 0.5, "unit": "um", "min": 100.0, "max": 3000.0,
        "Properties": {"Channel": "GFP", "Objective": "63x"}, "Info": "acquired on a confocal"})
    return path


def test_imagej_display_range_info_and_properties_reach_the_output(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = _imagej_stack(tmp_path / "in.tif"), tmp_path / "out.tif"
    assert main(["predict", str(src), "-o", str(out), "--method", "cubic", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}: 9 -> 17 slices (uint16, z voxel size 0.25 um)"
    with tifffile.TiffFile(out) as tif:
        meta = tif.imagej_metadata
    assert (meta["min"], meta["max"], meta["Info"]) == (100.0, 3000.0, "acquired on a confocal")
    assert meta["Properties"] == {"Channel": "GFP", "Objective": "63x"}
    assert meta["images"] == 17 and meta["spacing"] == pytest.approx(0.25)


def test_threads_sets_torch_threads_and_refuses_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _imagej_stack(tmp_path / "in.tif")
    code = ("import torch, sys; from zaugnet.cli import main; rc = main(sys.argv[1:]); "
            "print('threads', torch.get_num_threads()); sys.exit(rc)")
    run = subprocess.run([sys.executable, "-c", code, "predict", str(src), "-o", str(tmp_path / "o.tif"),
                          "--method", "cubic", "--quiet", "--threads", "1"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith("threads 1")
    before = torch.get_num_threads()
    assert main(["predict", str(src), "-o", str(tmp_path / "z.tif"), "--method", "cubic", "--threads", "0"]) == 2
    assert "--threads: must be at least 1" in capsys.readouterr().err
    assert torch.get_num_threads() == before and not (tmp_path / "z.tif").exists()
