"""ZS-DeconvNet training: config, the loss's PSF, patches, loss terms, a short run, exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from zaugnet.training.deconv.checkpoint import (
    load_deconv_checkpoint,
    load_deconv_network,
)
from zaugnet.training.deconv.config import (
    DeconvDataConfig,
    DeconvTrainConfig,
    build_deconv_config,
)
from zaugnet.training.deconv.data import (
    PatchSampler,
    TrainingVolumes,
    held_out_slices,
    lateral_half_width,
    patch_accepted,
    training_psf,
    validation_windows,
)
from zaugnet.training.deconv.losses import DeconvLoss, combine, loss_terms, swap_pairs
from zaugnet.training.deconv.nets import ZSDeconvNet3D
from zaugnet.training.deconv.trainer import DeconvTrainer

from zaugnet.deconv.forward import FFTConvolver, convolve_fft, split_odd_even
from zaugnet.deconv.predict import Affine
from zaugnet.deconv.psf import widefield_psf
from zaugnet.errors import InputError

OPTICS = {"na": 1.0, "wavelength": 0.5, "ni": 1.333}
TINY = {"preset": "small", "psf": OPTICS,
        "net": {"channels": 4, "head_channels": 4, "groups": 1, "blocks": 1, "reduction": 2},
        "data": {"patch": [5, 24, 24]},
        "train": {"batch_size": 2, "max_steps": 20, "lr": 1e-3, "val_every": 5, "checkpoint_every": 10}}
VOXEL = (0.5, 0.2)


def tiny_config(**train: object):
    return build_deconv_config(TINY, {"train": dict(train)})


def synthetic(shape: tuple[int, int, int] = (24, 40, 40), seed: int = 0) -> np.ndarray:
    """Gaussian blobs, blurred by a widefield PSF, with Poisson noise (raw counts, background 5)."""
    rng = np.random.default_rng(seed)
    obj = np.zeros(shape, np.float32)
    obj[tuple(rng.integers(0, shape, size=(40, 3)).T)] = 1.0
    obj = ndimage.gaussian_filter(obj, 1.0) * 50
    psf = widefield_psf((9, 31, 31), VOXEL[0], VOXEL[1], **OPTICS)
    blurred = convolve_fft(torch.from_numpy(obj)[None, None], psf)[0, 0].numpy()
    return rng.poisson(np.clip(blurred, 0, None) * 20 + 5).astype(np.float32)


def training_data(volume: np.ndarray) -> TrainingVolumes:
    affine = Affine.from_volumes([volume])
    return TrainingVolumes(["synthetic"], [affine.normalise(volume)], affine, VOXEL)


# --- config ---------------------------------------------------------------------------------------------


def test_paper_defaults_follow_the_note() -> None:
    cfg = build_deconv_config({"psf": OPTICS})
    assert cfg.preset == "paper" and cfg.data.patch == (13, 64, 64) and cfg.train.batch_size == 3
    assert (cfg.train.mu, cfg.train.lam, cfg.train.gamma, cfg.train.lr) == (0.5, 0.1, 1.0, 1e-4)
    assert cfg.data.percentiles == (0.1, 99.9)


def test_the_learning_rate_halves_on_schedule() -> None:
    cfg = DeconvTrainConfig(lr=1e-3, lr_halve_every=100)
    assert [cfg.lr_at(s) for s in (0, 99, 100, 199, 200, 350)] == [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 1.25e-4]


@pytest.mark.parametrize(("layer", "needle"), [
    ({"net": {"chanels": 8}}, "chanels"),
    ({"net": {"channels": 1000}}, "net.channels"),
    ({"net": {"channels": 4, "reduction": 8}}, "reduction"),
    ({"data": {"patch": [2, 64, 64]}}, "patch"),
    ({"data": {"patch": [13, 64, 4096]}}, "patch"),
    ({"psf": {"path": "psf.tif", "na": 1.2}}, "either path"),
    ({"psf": {"na": 1.2}}, "wavelength"),
    ({"preset": "huge"}, "preset"),
    ({"psf": {**OPTICS, "size": [9, 32, 33]}}, "odd"),
])
def test_bad_configs_are_refused_naming_the_field(layer: dict, needle: str) -> None:
    base = {} if "psf" in layer else {"psf": OPTICS}
    with pytest.raises(InputError, match=needle):
        build_deconv_config(base, layer)


# --- the loss's PSF -------------------------------------------------------------------------------------


def test_the_training_psf_reaches_across_the_patch_at_twice_the_z_spacing() -> None:
    cfg = build_deconv_config(TINY)

    psf = training_psf(cfg.psf, (5, 24, 24), VOXEL)

    # 2 n - 1 planes: light from any plane of a 5-plane patch reaches every other; laterally the energy crop
    assert psf.shape[0] == 9 and psf.shape[1] == psf.shape[2] < 47 and psf.shape[1] % 2 == 1
    assert float(psf.sum()) == pytest.approx(1.0, abs=1e-6)
    full = widefield_psf((9, 47, 47), 2 * VOXEL[0], VOXEL[1], **OPTICS)
    h, c = psf.shape[1] // 2, 23
    expected = full[:, c - h:c + h + 1, c - h:c + h + 1]
    np.testing.assert_allclose(psf, expected / expected.sum(), rtol=1e-5, atol=1e-8)
    assert expected.sum() / full.sum() >= 0.99  # the crop keeps 99 % of the energy


def test_a_psf_size_is_simulated_at_that_size_and_kept_whole() -> None:
    cfg = build_deconv_config(TINY, {"psf": {"size": [15, 41, 41]}})

    psf = training_psf(cfg.psf, (5, 24, 24), VOXEL)  # larger than the patch: its light reaches in from outside

    full = widefield_psf((15, 41, 41), 2 * VOXEL[0], VOXEL[1], **OPTICS)
    np.testing.assert_allclose(psf, full / full.sum(), rtol=1e-5, atol=1e-8)


def test_lateral_crop_gaussian_rule_and_energy_rule() -> None:
    yy, xx = np.indices((41, 41)) - 20
    gaussian = np.exp(-(yy**2 + xx**2) / (2 * 2.0**2))[None].repeat(3, 0)  # sigma 2 px
    # 4 sigma = 8 px; 99 % of a 2D Gaussian lies within a square of half width 2.81 sigma (5.6 px): 8 wins
    assert lateral_half_width(gaussian, 4.0) == 8
    ring = np.zeros((3, 41, 41))  # a defocus-like ring of radius 15 around a small core
    ring[:, (np.hypot(yy, xx) > 14.5) & (np.hypot(yy, xx) < 15.5)] = 1.0
    ring[:, 20, 20] = 50.0
    assert lateral_half_width(ring, 4.0) == 15  # the Gaussian fits the core; the energy rule keeps the ring


def test_the_forward_model_of_a_delta_is_the_psf() -> None:
    psf = training_psf(build_deconv_config(TINY).psf, (5, 24, 24), VOXEL)
    shape = (19, 51, 53)
    delta = torch.zeros(1, 1, *shape)
    delta[0, 0, 9, 25, 26] = 1.0

    blurred = FFTConvolver(psf, shape, "zeros")(delta)[0, 0].numpy()

    hz, hy = psf.shape[0] // 2, psf.shape[1] // 2
    expected = np.zeros(shape, np.float32)
    expected[9 - hz:9 + hz + 1, 25 - hy:25 + hy + 1, 26 - hy:26 + hy + 1] = psf
    np.testing.assert_allclose(blurred, expected, atol=1e-7)


# --- loss terms -----------------------------------------------------------------------------------------


def test_an_identity_denoiser_gives_zero_gap_terms() -> None:
    window = torch.rand(2, 1, 10, 12, 12)
    odd, even = split_odd_even(window)
    identity = FFTConvolver(np.ones((1, 1, 1), np.float32), (5, 12, 12))

    terms = loss_terms(odd, odd, even, window, identity)

    assert float(terms["gap_den"]) == 0.0
    assert float(terms["gap_dec"]) == pytest.approx(0.0, abs=1e-6)  # through the FFT: float32 rounding
    assert float(terms["den"]) == pytest.approx(float((odd - even).abs().mean()))


def test_noise_free_constant_data_scores_zero_and_weights_combine_by_hand() -> None:
    window = torch.full((1, 1, 8, 10, 10), 0.3)
    odd, even = split_odd_even(window)
    delta = FFTConvolver(np.ones((1, 1, 1), np.float32), (4, 10, 10))

    terms = loss_terms(odd, odd, even, window, delta)

    assert all(float(v) == pytest.approx(0.0, abs=1e-7) for v in terms.values())
    known = {k: torch.tensor(v) for k, v in {"den": 1.0, "gap_den": 2.0, "dec": 3.0, "gap_dec": 4.0,
                                             "hessian": 5.0}.items()}
    cfg = DeconvTrainConfig(mu=0.25, gamma=0.5, lam=0.1)
    assert float(combine(known, cfg)) == pytest.approx(0.25 * (1 + 0.5 * 2) + 0.75 * (3 + 0.5 * 4 + 0.1 * 5))
    known["negative"] = torch.tensor(6.0)  # counts for a clamped deconvolver only
    assert float(combine(known, cfg)) == pytest.approx(0.25 * (1 + 0.5 * 2) + 0.75 * (3 + 0.5 * 4 + 0.1 * 5))
    assert float(combine(known, cfg, clamped=True)) == pytest.approx(
        0.25 * (1 + 0.5 * 2) + 0.75 * (3 + 0.5 * 4 + 0.1 * 5 + 6))


def test_the_negative_term_is_the_mean_negative_part_before_the_clamp() -> None:
    unclamped = torch.ones(1, 1, 3, 3, 3)
    unclamped[0, 0, 0, 0, 0], unclamped[0, 0, 1, 1, 1] = -2.7, -5.4
    deconvolved = torch.relu(unclamped)
    identity = FFTConvolver(np.ones((1, 1, 1), np.float32), (3, 3, 3))
    window = torch.rand(1, 1, 6, 3, 3)

    terms = loss_terms(deconvolved, deconvolved, split_odd_even(window)[1], window, identity, unclamped)

    assert float(terms["negative"]) == pytest.approx(8.1 / 27)
    assert float(loss_terms(deconvolved, deconvolved, split_odd_even(window)[1], window, identity)["negative"]) == 0.0


def test_swapped_pairs_make_the_target_the_slice_above_the_input() -> None:
    window = torch.arange(6.0).reshape(1, 1, 6, 1, 1)

    odd, even = split_odd_even(swap_pairs(window))

    assert odd.flatten().tolist() == [1.0, 3.0, 5.0] and even.flatten().tolist() == [0.0, 2.0, 4.0]
    with pytest.raises(ValueError, match="even number"):
        swap_pairs(torch.zeros(1, 1, 5, 1, 1))


def test_the_gap_term_of_a_swapped_window_is_zero_for_an_identity_network() -> None:
    """Swapped, the denoiser's whole-window output must be swapped with the window: an identity network then
    still has a zero gap term (it would not if only the window were swapped)."""
    cfg = build_deconv_config({**TINY, "net": {"kind": "unet", "channels": 2, "levels": 1, "positive": False}})
    network = ZSDeconvNet3D(cfg.net)
    with torch.no_grad():
        for stage in (network.denoiser, network.deconvolver):
            stage.head.weight.zero_()
            stage.head.bias.zero_()  # x + 0: the identity
    loss = DeconvLoss(np.ones((1, 1, 1), np.float32), cfg.train)
    window = torch.rand(1, 1, 8, 16, 16)

    _, logs = loss(network, window, swap=True)

    assert logs["gap_den"] == pytest.approx(0.0, abs=1e-7) and logs["gap_dec"] == pytest.approx(0.0, abs=1e-6)
    assert logs["den"] == pytest.approx(float((window[:, :, 1::2] - window[:, :, 0::2]).abs().mean()))


def test_a_clamped_deconvolver_all_below_zero_still_learns() -> None:
    """With every output clamped to 0, only the negative term gives the deconvolver a gradient: it must push up."""
    torch.manual_seed(0)
    cfg = build_deconv_config({**TINY, "net": {"kind": "unet", "channels": 2, "levels": 1, "positive": True}})
    network = ZSDeconvNet3D(cfg.net)
    with torch.no_grad():
        network.deconvolver.stage.head.bias.fill_(-5.0)
    window = torch.rand(1, 1, 8, 16, 16)
    loss = DeconvLoss(widefield_psf((5, 9, 9), 1.0, 0.2, **OPTICS), cfg.train)

    total, logs = loss(network, window)
    _, deconvolved = network(split_odd_even(window)[0])
    total.backward()

    assert float(deconvolved.max()) == 0.0  # the clamp: nothing passes
    assert logs["negative"] > 4.0
    assert float(network.deconvolver.stage.head.bias.grad) < 0  # gradient descent raises the bias


# --- patches --------------------------------------------------------------------------------------------


def test_patch_rejection_rule() -> None:
    cfg = DeconvDataConfig()
    assert not patch_accepted(np.zeros((10, 8, 8)), cfg)  # mean 0
    assert not patch_accepted(np.full((10, 8, 8), 0.004), cfg)  # 0.004 / 0.014 < 0.5, and mean < 0.01
    assert patch_accepted(np.linspace(0, 1, 640).reshape(10, 8, 8), cfg)


def test_held_out_slices_are_even_and_at_least_six() -> None:
    assert [held_out_slices(n, 0.15) for n in (20, 45, 100)] == [6, 8, 16]
    assert held_out_slices(45, 0.0) == 0


def test_windows_never_reach_the_held_out_block_and_favour_the_foreground() -> None:
    volume = np.zeros((30, 40, 40), np.float32)
    volume[8:14, 20:26, 4:10] = 1.0  # the only structure of the training part
    volume[30 - held_out_slices(30, 0.15):] = 100.0  # the held-out block
    sampler = PatchSampler([volume], DeconvDataConfig(patch=(4, 16, 16)))

    batches = [sampler.batch(4, seed=0, step=s) for s in range(10)]

    assert all(float(b.max()) <= 1.0 for b in batches)
    assert all(float(w.max()) == 1.0 for b in batches for w in b)  # each window holds part of the blob
    torch.testing.assert_close(sampler.batch(4, 0, 3), batches[3])  # reproducible from (seed, step)
    assert tuple(batches[0].shape) == (4, 1, 8, 16, 16)
    (val,) = validation_windows([volume], 0.15)
    assert tuple(val.shape) == (1, 1, 6, 40, 40) and float(val.min()) == 100.0


# --- training -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> DeconvTrainer:
    torch.set_num_threads(1)
    config = tiny_config()
    data = training_data(synthetic())
    trainer = DeconvTrainer(config, data, training_psf(config.psf, config.data.patch, VOXEL),
                            tmp_path_factory.mktemp("deconv_run"))
    trainer.fit(progress=False)
    return trainer


def test_twenty_steps_decrease_the_loss_and_write_a_loadable_checkpoint(trained: DeconvTrainer) -> None:
    history = trained.history
    assert [row["step"] for row in history] == [5, 10, 15, 20]
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    final = trained.run_dir / "final.pt"
    assert (trained.run_dir / "metrics.csv").is_file() and (trained.run_dir / "config.yaml").is_file()
    assert (trained.run_dir / "checkpoints" / "step_00000010.pt").is_file()

    model = load_deconv_network(final)

    assert model.step == 20 and model.affine == trained.data.affine and model.voxel_size == VOXEL
    for a, b in zip(model.network.state_dict().values(), trained.network.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_resume_continues_exactly(trained: DeconvTrainer, tmp_path: Path) -> None:
    config = trained.config
    resumed = DeconvTrainer(config, trained.data, trained.psf, tmp_path)

    resumed.fit(resume=trained.run_dir / "checkpoints" / "step_00000010.pt", progress=False)

    assert resumed.step == 20
    for a, b in zip(resumed.network.state_dict().values(), trained.network.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed.history[-1]["loss"] == trained.history[-1]["loss"]


def test_resume_refuses_another_psf_or_normalisation(trained: DeconvTrainer, tmp_path: Path) -> None:
    checkpoint = trained.run_dir / "final.pt"
    other_psf = DeconvTrainer(trained.config, trained.data, np.ones((1, 1, 1), np.float32), tmp_path)
    with pytest.raises(InputError, match="PSF"):
        other_psf.load_state(checkpoint)
    data = TrainingVolumes(["x"], trained.data.volumes, Affine(offset=1.0, scale=2.0), VOXEL)
    other_affine = DeconvTrainer(trained.config, data, trained.psf, tmp_path)
    with pytest.raises(InputError, match="normalisation"):
        other_affine.load_state(checkpoint)


def test_alternate_swaps_the_roles_on_every_second_step_only(trained: DeconvTrainer, tmp_path: Path) -> None:
    runs = {}
    for alternate in (False, True):
        trainer = DeconvTrainer(tiny_config(alternate=alternate), trained.data, trained.psf, tmp_path / str(alternate))
        runs[alternate] = []
        for step in range(2):
            trainer.step = step
            runs[alternate].append(trainer.train_step(trainer.sampler.batch(2, 0, step)))

    assert runs[True][0] == runs[False][0]  # step 0: the same batch, the same roles
    assert runs[True][1]["den"] != runs[False][1]["den"]  # step 1: the roles swapped


def test_snapshots_are_the_checkpoint_steps_from_average_from_on() -> None:
    recipe = DeconvTrainConfig(average_from=500, checkpoint_every=100)
    assert [recipe.snapshots_at(s) for s in (499, 500, 599, 1000)] == [0, 1, 1, 6]
    assert DeconvTrainConfig(average_from=150, checkpoint_every=100).snapshots_at(200) == 1  # 200 is the first
    assert DeconvTrainConfig().snapshots_at(10_000) == 0


def test_average_from_predicts_with_the_mean_of_the_snapshots_and_resumes_it(
        trained: DeconvTrainer, tmp_path: Path) -> None:
    config = tiny_config(average_from=10, checkpoint_every=5)
    run = DeconvTrainer(config, trained.data, trained.psf, tmp_path / "run")
    run.fit(progress=False)
    snapshots = [load_deconv_checkpoint(tmp_path / "run" / "checkpoints" / f"step_000000{s}.pt")[1]["network"]
                 for s in (10, 15)] + [run.network.state_dict()]

    model = load_deconv_network(tmp_path / "run" / "final.pt")

    for name, value in model.network.state_dict().items():
        torch.testing.assert_close(value, sum(s[name] for s in snapshots) / 3, rtol=0, atol=1e-6)
    assert not torch.equal(next(iter(model.network.state_dict().values())), next(iter(snapshots[-1].values())))
    resumed = DeconvTrainer(config, trained.data, trained.psf, tmp_path / "resumed")
    resumed.fit(resume=tmp_path / "run" / "checkpoints" / "step_00000015.pt", progress=False)
    again = load_deconv_network(tmp_path / "resumed" / "final.pt")
    for a, b in zip(again.network.state_dict().values(), model.network.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_axial_zeros_padding_is_zeros_in_z_and_mirrored_in_xy() -> None:
    rng = np.random.default_rng(3)
    psf = rng.random((5, 7, 7)).astype(np.float32)
    psf /= psf.sum()
    volume = rng.random((6, 12, 13)).astype(np.float32)

    blurred = DeconvLoss(psf, DeconvTrainConfig(), "axial-zeros").forward_model((6, 12, 13))(
        torch.from_numpy(volume)[None, None])[0, 0].numpy()

    mirrored = np.pad(volume.astype(np.float64), ((0, 0), (3, 3), (3, 3)), mode="reflect")
    expected = ndimage.convolve(mirrored, psf.astype(np.float64), mode="constant", cval=0.0)[:, 3:-3, 3:-3]
    np.testing.assert_allclose(blurred, expected, atol=1e-6)
