"""Training end to end: learning, exact resume, run directory contents, two-process DDP."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support import TINY_SET, tiny_config
from zaugnet.training.checkpoint import load_checkpoint, load_generator
from zaugnet.training.config import build_config, load_yaml
from zaugnet.training.trainer import (
    Trainer,
    bf16_autocast_supported,
    load_training_data,
    triplets_for_rank,
)

from zaugnet.cli import main
from zaugnet.evaluate.metrics import psnr
from zaugnet.gaps import normalize_pair
from zaugnet.io.tiff import VoxelSize, write_stack
from zaugnet.phantoms import simulate_stack


def _tiny_args(*extra: str) -> list[str]:
    return [arg for item in TINY_SET for arg in ("--set", item)] + ["--quiet", *extra]


def _rows(run: Path) -> list[dict[str, float]]:
    with (run / "metrics.csv").open() as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def test_run_directory_holds_config_checkpoints_metrics_and_curves(phantom_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", str(phantom_dir), "-o", str(run), "--preset", "small", "--max-steps", "4",
                 *_tiny_args("--set", "train.val_every=2")]) == 0
    assert (run / "final.pt").is_file() and (run / "checkpoints" / "step_00000002.pt").is_file()
    assert (run / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = _rows(run)
    assert [r["step"] for r in rows] == [2, 4]
    assert {"loss_g", "val_loss", "val_psnr", "val_ssim", "val_psnr_linear"} <= set(rows[-1])
    state = load_checkpoint(run / "final.pt")
    assert build_config(load_yaml(run / "config.yaml")).to_dict() == state["config"]
    assert state["critic"] is None  # the small preset trains the generator alone


def test_resume_from_a_checkpoint_gives_the_uninterrupted_weights(phantom_dir: Path, tmp_path: Path) -> None:
    """Adversarial mode (critic + n_critic schedule): a run stopped at step 2 (by --max-steps, or taken up
    from its step-2 checkpoint) and resumed to step 6 ends with exactly the weights of a straight run."""
    common = ["--preset", "small", "--seed", "7", *_tiny_args("--set", "train.lambda_adv=0.001", "--set",
                                                              "train.n_critic=2", "--set", "train.val_every=3")]
    straight, stopped, taken_up = tmp_path / "straight", tmp_path / "stopped", tmp_path / "taken_up"
    assert main(["train", str(phantom_dir), "-o", str(straight), "--max-steps", "6", *common]) == 0
    assert main(["train", str(phantom_dir), "-o", str(stopped), "--max-steps", "2", *common]) == 0
    assert main(["train", str(phantom_dir), "-o", str(stopped), "--max-steps", "6", "--resume", *common]) == 0
    step2 = straight / "checkpoints" / "step_00000002.pt"
    assert main(["train", str(phantom_dir), "-o", str(taken_up), "--max-steps", "6", "--resume", str(step2),
                 *common]) == 0
    a = load_checkpoint(straight / "final.pt")
    for other in (stopped, taken_up):
        b = load_checkpoint(other / "final.pt")
        assert a["step"] == b["step"] == 6
        for part in ("generator", "critic", "opt_g"):
            ta, tb = a[part], b[part]
            ta, tb = (ta["state"], tb["state"]) if part == "opt_g" else (ta, tb)
            assert ta.keys() == tb.keys()
            for k in ta:
                va, vb = ta[k], tb[k]
                pairs = zip(va.values(), vb.values()) if isinstance(va, dict) else [(va, vb)]
                assert all(torch.equal(x, y) for x, y in pairs), (other.name, part, k)
    # training did change the weights, and the logged history continues where it stopped
    assert not all(torch.equal(a["generator"][k], v) for k, v in load_checkpoint(step2)["generator"].items())
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(a["history"]) == drop(load_checkpoint(taken_up / "final.pt")["history"])


@pytest.mark.slow
def test_small_preset_learns_and_beats_linear_interpolation_on_held_out_phantoms(small_model: Path) -> None:
    """A minute of CPU training on membrane phantoms (fixture ``small_model``): validation loss falls, and
    on a phantom never seen in training the model predicts removed slices better than linear interpolation."""
    run = small_model
    rows = _rows(run)
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    assert rows[-1]["val_psnr"] > rows[-1]["val_psnr_linear"] + 1.0

    # independent check on an unseen phantom: drop every second slice, predict it back
    _, generator = load_generator(run / "final.pt")
    held_out = simulate_stack((9, 96, 96), kind="membrane", seed=99, z_step_um=0.6).astype(np.float32)
    model_db, linear_db = [], []
    for i in range(0, 7, 2):
        lo, scale = normalize_pair(held_out[[i, i + 2]])
        pair, truth = (held_out[[i, i + 2]] - lo) / scale, (held_out[i + 1] - lo) / scale
        with torch.no_grad():
            pred = generator.student(torch.from_numpy(pair)[None])[0, 0].numpy()
        model_db.append(psnr(pred, truth))
        linear_db.append(psnr(pair.mean(0), truth))
    assert np.mean(model_db) > np.mean(linear_db) + 1.0, (model_db, linear_db)


@pytest.mark.slow
def test_two_process_cpu_ddp(phantom_dir: Path, tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo), adversarial mode, 2 accumulated micro-batches (DDP no_sync):
    runs, and saves clean keys once."""
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "zaugnet",
           "train", str(phantom_dir), "-o", str(run), "--preset", "small", "--max-steps", "4", "--device", "cpu",
           *_tiny_args("--set", "train.lambda_adv=0.001", "--set", "train.n_critic=2", "--set", "train.accumulate=2")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_checkpoint(run / "final.pt")
    assert state["step"] == 4
    for part in ("generator", "critic"):
        assert not any(k.startswith("module.") for k in state[part])
    _, generator = load_generator(run / "final.pt")  # loads into a plain (non-DDP) model: the saved weights
    loaded = generator.state_dict()
    assert loaded.keys() == state["generator"].keys()
    assert all(torch.equal(loaded[k], state["generator"][k]) for k in loaded)
    # and they are trained ones: the DDP steps after the step-2 checkpoint changed them
    step2 = load_checkpoint(run / "checkpoints" / "step_00000002.pt")["generator"]
    assert not all(torch.equal(state["generator"][k], step2[k]) for k in step2)


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_on_both_ranks_batches(tmp_path: Path) -> None:
    """End to end through torchrun (2 CPU processes, gloo): the ranks sample disjoint training volumes and
    DDP averages their gradients, so the weights equal one process that sums the same two batches as two
    accumulated micro-batches (rebuilt here from the sampler's (seed, step, rank) draws)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for seed in range(5):  # 4 training volumes (2 per rank) + 1 for validation
        stack = simulate_stack((10, 48, 48), kind="membrane", seed=40 + seed, z_step_um=0.6)
        write_stack(data_dir / f"membrane_{seed}.tif", stack, "ZYX", VoxelSize(0.6, 0.2, 0.2))
    steps, per_rank = 3, 2
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "zaugnet",
           "train", str(data_dir), "-o", str(run), "--preset", "small", "--variant", "zaugnet+",
           "--max-steps", str(steps), "--device", "cpu",
           *_tiny_args("--set", "train.amp=false", "--set", "train.val_every=100")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stderr
    ddp = load_checkpoint(run / "final.pt")["generator"]

    def reference(ranks: int) -> dict[str, torch.Tensor]:
        cfg = tiny_config("zaugnet+", batch_size=per_rank * ranks, accumulate=ranks, amp=False)
        trainer = Trainer(cfg, load_training_data([data_dir]), tmp_path / f"ref{ranks}")
        mine = [triplets_for_rank(trainer.train_triplets, r, 2) for r in range(ranks)]
        for step in range(steps):
            batches = [trainer.sampler.batch(mine[r], per_rank, cfg.train.seed, step, r) for r in range(ranks)]
            trainer.train_step(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
            trainer.step += 1
        if ranks == 2:
            assert {t[0] for t in mine[0]}.isdisjoint({t[0] for t in mine[1]})
        return trainer.state()["generator"]

    both = reference(2)
    assert all(torch.allclose(ddp[k], both[k], rtol=1e-4, atol=1e-6) for k in both)
    rank0_alone = reference(1)  # without rank 1's gradients the weights differ: the comparison can fail
    assert not all(torch.allclose(ddp[k], rank0_alone[k], rtol=1e-4, atol=1e-6) for k in both)


def test_bfloat16_autocast_on_a_cpu_that_runs_it_natively(phantom_dir: Path, tmp_path: Path) -> None:
    """``train.amp`` on a CPU with AMX / AVX512-BF16: the forward runs in bfloat16 and a few steps give the
    float32 losses to within bfloat16 rounding; with ``amp`` off (or without native bf16) it is float32."""
    data = load_training_data([phantom_dir])
    trainers = {amp: Trainer(tiny_config("zaugnet", amp=amp), data, tmp_path / str(amp)) for amp in (True, False)}
    if not bf16_autocast_supported(torch.device("cpu")):
        assert not trainers[True].amp
        pytest.skip("this CPU has no native bfloat16 (AMX / AVX512-BF16): train.amp is ignored here")
    x, _ = trainers[True].sampler.batch(trainers[True].train_triplets, 2, 0, 0)
    for amp, trainer in trainers.items():  # the dtype the student's first convolution computes in
        conv = next(m for m in trainer.generator.student.modules() if isinstance(m, torch.nn.Conv2d))
        seen = []
        hook = conv.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
        with torch.no_grad(), trainer.autocast():
            trainer.generator.student(x)
        hook.remove()
        assert seen == [torch.bfloat16 if amp else torch.float32]
    losses = {}
    for amp, trainer in trainers.items():
        logs = []
        for step in range(3):
            x, gt = trainer.sampler.batch(trainer.train_triplets, 2, 0, step)
            logs.append(trainer.train_step(x, gt)["loss_g"])
            trainer.step += 1
        losses[amp] = np.array(logs)
    assert np.allclose(losses[True], losses[False], rtol=0.03), losses
    assert all(torch.isfinite(p).all() for p in trainers[True].generator.parameters())


@pytest.mark.gpu
def test_single_gpu_training_with_amp(phantom_dir: Path, tmp_path: Path) -> None:
    """bfloat16 autocast on one GPU: trains and saves weights that load on the CPU."""
    run = tmp_path / "gpu"
    assert main(["train", str(phantom_dir), "-o", str(run), "--preset", "small", "--max-steps", "4",
                 "--device", "cuda", *_tiny_args("--set", "train.lambda_adv=0.001")]) == 0
    _, generator = load_generator(run / "final.pt")
    assert all(torch.isfinite(p).all() for p in generator.parameters())


def test_gradient_accumulation_equals_one_large_batch(phantom_dir: Path, tmp_path: Path) -> None:
    """4 micro-batches of 1 give the weights of one batch of 4 (generator and critic), up to float rounding."""
    data = load_training_data([phantom_dir])
    finals = []
    for accumulate in (1, 4):
        cfg = tiny_config("zaugnet+", batch_size=4, accumulate=accumulate, lambda_adv=0.001, n_critic=1,
                          max_steps=2, val_every=100, amp=False)
        trainer = Trainer(cfg, data, tmp_path / f"acc{accumulate}")
        trainer.fit(progress=False)
        finals.append(trainer.state())
    for part in ("generator", "critic"):
        a, b = finals[0][part], finals[1][part]
        assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a), part
    first = load_checkpoint(tmp_path / "acc1" / "final.pt")["generator"]
    init = Trainer(tiny_config("zaugnet+"), data, tmp_path / "init").state()["generator"]
    assert not all(torch.equal(first[k], init[k]) for k in first)  # the steps did change the weights


def test_volumes_are_dealt_to_ranks() -> None:
    triplets = [(v, 0, 1, 2) for v in range(5)]
    ranks = [triplets_for_rank(triplets, r, 2) for r in range(2)]
    assert {t[0] for t in ranks[0]} == {0, 2, 4} and {t[0] for t in ranks[1]} == {1, 3}
    assert triplets_for_rank(triplets[:1], 1, 2) == triplets[:1]  # fewer volumes than ranks: all
