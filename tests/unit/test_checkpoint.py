"""Checkpoints hold plain data only; a pickle that would run code is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support import tiny_config
from zaugnet.training.checkpoint import (
    load_checkpoint,
    load_generator,
    save_checkpoint,
    warm_start,
)
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


# ------------------------------------------------------------------ warm start (train.init)
def test_warm_start_gives_a_zaugnet_c_the_zaugnet_plus_student_as_its_flow_branch(tiny_checkpoints) -> None:
    _, source = load_generator(tiny_checkpoints["zaugnet+"])
    target = Generator(tiny_config("zaugnet-c").net)
    copied = warm_start(target, tiny_checkpoints["zaugnet+"])
    assert copied == len(source.state_dict())
    flow = target.student.flow.state_dict()
    for key, value in source.student.state_dict().items():
        assert torch.equal(flow[key], value), key
    for key, value in source.teacher.state_dict().items():
        assert torch.equal(target.teacher.state_dict()[key], value), key
    # the head passes the flow branch's prediction through: the ZAugNet-C begins as that ZAugNet+ (at any z)
    x = torch.rand(2, target.student.in_channels, 32, 48)
    x[:, -1] = torch.tensor([0.3, 0.5]).view(2, 1, 1)
    with torch.no_grad():
        flow = source.student.eval()(target.student.flow_input(x))
        assert torch.allclose(target.student.eval()(x), flow, atol=1e-6)
        assert (target.student.cubic(x) - flow).abs().max() > 1e-2  # and that is not cubic interpolation


def test_warm_start_of_the_same_variant_copies_every_weight(tiny_checkpoints) -> None:
    _, source = load_generator(tiny_checkpoints["zaugnet+"])
    target = Generator(tiny_config("zaugnet+").net)
    warm_start(target, tiny_checkpoints["zaugnet+"])
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())


def test_warm_start_refuses_weights_of_other_widths(tiny_checkpoints) -> None:
    wider = tiny_config("zaugnet+").net.model_copy(update={"block_widths": [24, 12, 8]})
    with pytest.raises(InputError, match=r"train\.init: its zaugnet\+ weights do not fit this network"):
        warm_start(Generator(wider), tiny_checkpoints["zaugnet+"])


def test_the_trainer_starts_from_train_init(tiny_checkpoints, phantom_dir: Path, tmp_path: Path) -> None:
    from zaugnet.training.trainer import Trainer, load_training_data

    _, source = load_generator(tiny_checkpoints["zaugnet+"])
    config = tiny_config("zaugnet+", init=str(tiny_checkpoints["zaugnet+"]))
    trainer = Trainer(config, load_training_data([phantom_dir]), tmp_path / "run")
    assert all(torch.equal(trainer.generator.state_dict()[k], v) for k, v in source.state_dict().items())
