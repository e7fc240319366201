"""Shared fixtures: small phantom stacks, the shared real data, a seeded generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import SHARED_DATA

from zaugnet.training.io import VoxelSize, write_stack
from zaugnet.training.phantoms import simulate_stack


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
