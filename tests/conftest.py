"""Shared fixtures: small phantom stacks, the shared real data, a seeded generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import SHARED_DATA

from zaugnet.io.tiff import VoxelSize, write_stack
from zaugnet.phantoms import simulate_stack


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with two small uint16 membrane phantoms (12 x 48 x 48, z 0.6 um, xy 0.2 um)."""
    folder = tmp_path_factory.mktemp("phantoms")
    for seed in (1, 2):
        data = simulate_stack((12, 48, 48), kind="membrane", seed=seed, z_step_um=0.6, xy_step_um=0.2)
        write_stack(folder / f"membrane_{seed}.tif", data, "ZYX", VoxelSize(0.6, 0.2, 0.2))
    return folder


@pytest.fixture()
def shared_data() -> Path:
    """The folder of real stacks, or a skip saying it is absent."""
    if not SHARED_DATA.is_dir() or not any(SHARED_DATA.glob("*.tif")):
        pytest.skip(f"real stacks not found at {SHARED_DATA} (the shared/ folder beside the checkout)")
    return SHARED_DATA


@pytest.fixture()
def rng() -> np.random.Generator:
    """A seeded random generator."""
    return np.random.default_rng(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` skip, saying why, where CUDA is not available."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine (CPU-only CI)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_checkpoints(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``final.pt`` of a tiny ZAugNet, ZAugNet+ and ZAugNet-C (K = 4) trained for 2 steps (for shape and plumbing
    tests)."""
    from support import TINY_SET

    from zaugnet.cli import main

    out = {}
    for variant in ("zaugnet", "zaugnet+", "zaugnet-c"):
        run = tmp_path_factory.mktemp(f"tiny_{variant}")
        args = ["train", str(phantom_dir), "-o", str(run), "--variant", variant, "--preset", "small",
                "--max-steps", "2", "--quiet"] + [a for item in TINY_SET for a in ("--set", item)]
        assert main(args) == 0
        out[variant] = run / "final.pt"
    return out


@pytest.fixture(scope="session")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run directory of the small ZAugNet preset trained for 150 steps (about a minute) on three
    membrane phantoms (20 x 96 x 96, z 0.6 um); seeds 1-3, so phantoms with other seeds are unseen."""
    from zaugnet.cli import main

    data = tmp_path_factory.mktemp("small_model_data")
    for seed in (1, 2, 3):
        stack = simulate_stack((20, 96, 96), kind="membrane", seed=seed, z_step_um=0.6)
        write_stack(data / f"m{seed}.tif", stack, "ZYX", VoxelSize(0.6, 0.2, 0.2))
    run = tmp_path_factory.mktemp("small_model")
    assert main(["train", str(data), "-o", str(run), "--preset", "small", "--max-steps", "150",
                 "--set", "train.val_every=50", "--quiet", "--overwrite"]) == 0
    return run
