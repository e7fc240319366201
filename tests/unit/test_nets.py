"""Networks: parameter counts of the paper preset, warping, DPM input, any input size, scripting."""

from __future__ import annotations

import pytest
import torch
from support import tiny_config
from zaugnet.training.config import build_config
from zaugnet.training.nets import (
    Critic,
    Generator,
    Student,
    count_parameters,
    pad_to_multiple,
    warp,
)


@pytest.mark.parametrize("variant", ["zaugnet", "zaugnet+"])
def test_paper_parameter_counts_match_the_reference(variant: str) -> None:
    """Reference (METHOD.md): generator 10.69 M incl. teacher, 10.06 M without, critic 11.19 M; within 2 %."""
    net = build_config({"preset": "paper", "net": {"variant": variant}}).net
    generator, critic = Generator(net), Critic(net.critic_width)
    for got, ref in ((count_parameters(generator), 10.69e6), (count_parameters(generator.student), 10.06e6),
                     (count_parameters(critic), 11.19e6)):
        assert abs(got - ref) / ref < 0.02, (got, ref)
    blocks = generator.student.blocks
    for got, ref in ((count_parameters(blocks[0]), 4.43e6), (count_parameters(blocks[1]), 1.74e6),
                     (count_parameters(blocks[2]), 0.63e6), (count_parameters(generator.teacher), 0.63e6),
                     (count_parameters(generator.student.context), 0.29e6),
                     (count_parameters(generator.student.unet), 2.96e6)):
        assert abs(got - ref) / ref < 0.02, (got, ref)


def test_zaugnet_plus_adds_only_the_dpm_input_weights() -> None:
    """The DPM is one extra input channel of each IFBlock's first conv (about 2.5 k weights)."""
    counts = [count_parameters(Generator(build_config({"net": {"variant": v}}).net)) for v in ("zaugnet", "zaugnet+")]
    assert 2000 < counts[1] - counts[0] < 3000


def test_zero_flow_warp_returns_the_input() -> None:
    """Bitwise where (W-1) and (H-1) are powers of two; to float32 rounding at other sizes."""
    x = torch.rand(2, 1, 17, 33)
    assert torch.equal(warp(x, torch.zeros(2, 2, 17, 33)), x)
    y = torch.rand(2, 3, 45, 70)
    assert torch.allclose(warp(y, torch.zeros(2, 2, 45, 70)), y, rtol=0, atol=1e-5)


def test_integer_flow_shifts_the_image() -> None:
    """A flow of +1 pixel in x samples the right neighbour (backward warping)."""
    x = torch.arange(5 * 9, dtype=torch.float32).view(1, 1, 5, 9)
    flow = torch.zeros(1, 2, 5, 9)
    flow[:, 0] = 1.0
    out = warp(x, flow)
    assert torch.allclose(out[..., :-1], x[..., 1:])
    assert torch.allclose(out[..., -1], x[..., -1])  # border padding


@pytest.mark.parametrize("variant,channels", [("zaugnet", 2), ("zaugnet+", 3)])
def test_dpm_channel_only_for_zaugnet_plus_and_it_carries_z(variant: str, channels: int) -> None:
    """ZAugNet+ reads the third channel; ZAugNet takes two and ignores anything beyond."""
    torch.manual_seed(0)
    student = Student(tiny_config(variant).net).eval()
    assert student.in_channels == channels
    pair = torch.rand(1, 2, 32, 32)
    at = [student(torch.cat((pair, torch.full((1, 1, 32, 32), z)), 1)) for z in (0.25, 0.75)]
    if variant == "zaugnet+":
        assert not torch.allclose(at[0], at[1])
    else:
        assert torch.equal(at[0], at[1])


@pytest.mark.parametrize("shape", [(1, 16, 16), (2, 37, 53), (1, 64, 20), (3, 5, 7)])
def test_student_accepts_any_size_and_keeps_it(shape: tuple[int, int, int]) -> None:
    """Internal padding: output has the input's H x W and lies in [0, 1]."""
    b, h, w = shape
    with torch.no_grad():
        out = Student(tiny_config("zaugnet+").net).eval()(torch.rand(b, 3, h, w))
    assert out.shape == (b, 1, h, w)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_padding_reflects_then_crops_back() -> None:
    x = torch.rand(1, 1, 20, 33)
    padded = pad_to_multiple(x, 16)
    assert padded.shape[-2:] == (32, 48)
    assert torch.equal(padded[..., :20, :33], x)
    assert torch.equal(padded[..., 20, :33], x[..., 18, :])  # reflection


def test_student_scripts_and_runs_at_other_sizes() -> None:
    """No grid caches: a scripted student gives the eager result at sizes it never saw."""
    student = Student(tiny_config("zaugnet+").net).eval()
    scripted = torch.jit.script(student)
    for shape in ((1, 3, 32, 32), (2, 3, 45, 70)):
        x = torch.rand(*shape)
        assert torch.allclose(scripted(x), student(x), atol=1e-6)


def test_generator_training_outputs() -> None:
    """The teacher sees the ground truth; outputs have the target's shape; distillation is a finite scalar."""
    gen = Generator(tiny_config("zaugnet").net)
    x, gt = torch.rand(2, 2, 32, 48), torch.rand(2, 1, 32, 48)
    out = gen(x, gt)
    assert out["student"].shape == out["teacher"].shape == gt.shape
    assert out["distill"].ndim == 0 and torch.isfinite(out["distill"])
    other = gen(x, torch.rand(2, 1, 32, 48))
    assert not torch.allclose(out["teacher"], other["teacher"])  # the teacher depends on gt
    assert torch.equal(out["student"], other["student"])  # the student does not


@pytest.mark.parametrize("size", [16, 33, 64, 256])
def test_critic_accepts_any_crop_size(size: int) -> None:
    assert Critic(4)(torch.rand(3, 1, size, size)).shape == (3,)
