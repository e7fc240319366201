"""Checkpoints hold plain data only; a pickle that would run code is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support import tiny_config
from zaugnet.training.checkpoint import load_checkpoint, load_generator, save_checkpoint
from zaugnet.training.nets import Generator

from zaugnet.errors import InputError


class _RunsCode:
    """Unpickling this runs a shell command: a checkpoint from elsewhere must never get that far."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_round_trip_with_optimizer_state(tmp_path: Path) -> None:
    cfg = tiny_config()
    gen = Generator(cfg.net)
    opt = torch.optim.Adam(gen.parameters(), betas=(0.5, 0.999))
    gen(torch.rand(1, 2, 32, 32), torch.rand(1, 1, 32, 32))["student"].mean().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "c.pt", {"config": cfg.to_dict(), "generator": gen.state_dict(),
                                               "opt_g": opt.state_dict(), "step": 3, "history": [{"a": 1.0}]})
    state = load_checkpoint(path)
    assert state["step"] == 3 and state["history"] == [{"a": 1.0}]
    config, loaded = load_generator(path)
    assert config == cfg
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), gen.state_dict().values()))
    assert not any(k.startswith("module.") for k in state["generator"])


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "zaugnet-checkpoint", "format_version": 1, "payload": _RunsCode(marker)}, path)
    with pytest.raises(InputError, match="refused") as err:
        load_checkpoint(path)
    assert "evil.pt" in str(err.value)
    assert not marker.exists()
    # the file is truly malicious: an unrestricted load runs its command
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("content", [b"not a checkpoint", b""])
def test_garbage_is_not_a_checkpoint(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(InputError, match="x.pt"):
        load_checkpoint(path)


def test_a_torch_file_without_the_format_tag_is_refused(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a ZAugNet checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
