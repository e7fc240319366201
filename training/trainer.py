"""The training loop: student + teacher (+ WGAN-GP critic), checkpoints, exact resume, validation, DDP.

Launch on several GPUs (or CPU processes) with ``torchrun --nproc-per-node N -m zaugnet train ...``:
each process samples its own batches (seeded by rank), gradients are averaged by
DistributedDataParallel, and only rank 0 writes files. Saved state dicts never carry ``module.``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from zaugnet import __version__
from zaugnet.devices import pick_device
from zaugnet.errors import InputError
from zaugnet.evaluate.metrics import psnr, ssim
from zaugnet.figures import plot_training_curves
from zaugnet.gaps import SIZE_MULTIPLE
from zaugnet.io.tiff import find_stacks, iter_volumes, read_stack
from zaugnet.tables import columns, write_csv

from .checkpoint import load_checkpoint, save_checkpoint, warm_start
from .config import Config, NetConfig, save_yaml
from .data import Split, Triplet, TripletSampler, collect_triplets, split_volumes
from .losses import LaplacianLoss, critic_loss
from .nets import Critic, Generator
from .runs import CONFIG, CURVES, FINAL, METRICS, checkpoint_path, step_checkpoints


@dataclass
class TrainingData:
    """Volumes (Z, Y, X) with names, ready to be split into triplets."""

    names: list[str]
    volumes: list[np.ndarray]


def load_training_data(paths: Sequence[str | Path], axes: str | None = None) -> TrainingData:
    """Read every stack (files or folders of TIFFs) and split time points / channels into volumes.

    Everything is validated before training starts, so a bad file stops the run before anything is written.
    """
    names: list[str] = []
    volumes: list[np.ndarray] = []
    for path in find_stacks(paths):
        stack = read_stack(path, axes=axes, mmap=True)
        for label, vol in iter_volumes(stack):
            if min(vol.shape[1:]) < SIZE_MULTIPLE:
                raise InputError(path, f"slices of {vol.shape[1]} x {vol.shape[2]} pixels are too small to "
                                       f"train on (at least {SIZE_MULTIPLE} x {SIZE_MULTIPLE})")
            names.append(f"{path.name}{':' + label if label else ''}")
            volumes.append(vol)
    return TrainingData(names, volumes)


def triplets_for_rank(triplets: Sequence[Triplet], rank: int, world: int) -> list[Triplet]:
    """The triplets process ``rank`` of ``world`` samples from: whole volumes dealt round-robin to ranks.

    With fewer training volumes than processes every rank samples from all of them (its batches
    still differ, being seeded by rank).
    """
    volumes = sorted({t[0] for t in triplets})
    if world <= 1 or len(volumes) < world:
        return list(triplets)
    mine = set(volumes[rank::world])
    return [t for t in triplets if t[0] in mine]


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


def bf16_autocast_supported(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 natively: CUDA with bf16, or a CPU with AVX512-BF16 or AMX.

    Without hardware support bfloat16 is usually slower than float32 (not measured here: this project's CPU
    has both), so ``train.amp`` is ignored there.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


class Trainer:
    """Trains a ZAugNet / ZAugNet+ generator on self-supervised triplets.

    Parameters
    ----------
    config
        The validated run configuration.
    data
        Training volumes (from :func:`load_training_data`).
    run_dir
        The run folder (its layout: :mod:`.runs`).
    """

    def __init__(self, config: Config, data: TrainingData, run_dir: str | Path) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(pick_device(config.train.device, "train.device", local_rank))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.amp = config.train.amp and bf16_autocast_supported(self.device)

        variant, tc, dc = config.net.variant, config.train, config.data
        split: Split = split_volumes([v.shape[0] for v in data.volumes], dc.val_fraction, tc.seed)
        self.train_triplets = collect_triplets(split.train, variant, dc.window)
        self.val_triplets = collect_triplets(split.val, variant, dc.window)
        if not self.train_triplets:
            raise InputError("data", "no training triplets: the stacks need at least 3 z-slices outside validation")
        self.sampler = TripletSampler(data.volumes, variant, dc, config.net.n_slices, split.train + split.val)
        self.val_set = (self.sampler.fixed(self.val_triplets, dc.val_max_samples) if self.val_triplets else None)
        self.rank_triplets = triplets_for_rank(self.train_triplets, self.rank, self.world)
        self.steps_per_epoch = max(1, math.ceil(len(self.train_triplets) / (tc.batch_size * self.world)))

        torch.manual_seed(tc.seed)
        generator = Generator(config.net)
        if tc.init:
            warm_start(generator, tc.init)
        generator = generator.to(self.device)
        critic = Critic(config.net.critic_width).to(self.device) if tc.adversarial else None
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=tc.lr, betas=tc.betas)
        self.opt_d = torch.optim.Adam(critic.parameters(), lr=tc.lr, betas=tc.betas) if critic else None
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            generator = DistributedDataParallel(generator, device_ids=ids)
            critic = DistributedDataParallel(critic, device_ids=ids) if critic else None
        self.generator, self.critic = generator, critic
        self.lap = LaplacianLoss().to(self.device)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.pending: dict[str, list[float]] = {}  # per-step logs since the last history row: name -> [sum, count]
        self.data_names = data.names

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """Everything needed to resume exactly (plain tensors and data)."""
        return {
            "zaugnet_version": __version__,
            "config": self.config.to_dict(),
            "step": self.step,
            "generator": _unwrap(self.generator).state_dict(),
            "critic": _unwrap(self.critic).state_dict() if self.critic else None,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d else None,
            "history": self.history,
            "pending": self.pending,
            "data": self.data_names,
        }

    def load_state(self, path: str | Path) -> None:
        """Continue from a checkpoint written by :meth:`state` with the same network configuration."""
        state = load_checkpoint(path)
        if NetConfig.model_validate(state["config"]["net"]) != self.config.net:
            raise InputError(path, "its network configuration differs from this run's")
        _unwrap(self.generator).load_state_dict(state["generator"])
        self.opt_g.load_state_dict(state["opt_g"])
        if self.critic is not None:
            if state.get("critic") is None:
                raise InputError(path, "has no critic, but this run trains adversarially (train.lambda_adv > 0)")
            _unwrap(self.critic).load_state_dict(state["critic"])
            self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])
        self.history = list(state.get("history", []))
        self.pending = dict(state.get("pending", {}))

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint in the run directory (by step), if any."""
        candidates = step_checkpoints(self.run_dir)
        final = self.run_dir / FINAL
        if final.exists():
            candidates[int(load_checkpoint(final)["step"])] = final
        return candidates[max(candidates)] if candidates else None

    # ------------------------------------------------------------------ steps
    def autocast(self) -> AbstractContextManager[None]:
        """bfloat16 autocast when ``train.amp`` is on and the device runs bfloat16 natively, else nothing."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()

    def _micro(self, module: nn.Module, i: int, n: int):
        """DistributedDataParallel: average gradients only on the last of ``n`` accumulated micro-batches."""
        if isinstance(module, DistributedDataParallel) and i < n - 1:
            return module.no_sync()
        return nullcontext()

    def train_step(self, x: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
        """One batch: a critic update (adversarial mode), and a generator update every ``n_critic`` batches.

        The batch is split into ``train.accumulate`` equal micro-batches whose gradients are summed
        before each optimiser step (losses divided accordingly), so the update equals one on the whole
        batch while only a micro-batch is in memory.
        """
        tc = self.config.train
        xs, gts = x.chunk(tc.accumulate), gt.chunk(tc.accumulate)
        n = len(xs)
        logs: dict[str, float] = {}
        if self.critic is not None:
            alpha_rng = torch.Generator().manual_seed(tc.seed * 1_000_003 + self.step * 101 + self.rank)
            self.opt_d.zero_grad(set_to_none=True)
            for i, (xi, gi) in enumerate(zip(xs, gts)):
                with torch.no_grad(), self.autocast():
                    fake = _unwrap(self.generator).student(xi).float()
                with self._micro(self.critic, i, n), self.autocast():
                    loss_d, wdist = critic_loss(self.critic, gi, fake, tc.lambda_gp, alpha_rng)
                    (loss_d / n).backward()
                logs["loss_d"] = logs.get("loss_d", 0.0) + float(loss_d.detach()) / n
                logs["wasserstein"] = logs.get("wasserstein", 0.0) + float(wdist) / n
            self.opt_d.step()
        if self.critic is None or (self.step + 1) % tc.n_critic == 0:
            self.opt_g.zero_grad(set_to_none=True)
            for i, (xi, gi) in enumerate(zip(xs, gts)):
                with self._micro(self.generator, i, n), self.autocast():
                    out = self.generator(xi, gi)
                    parts = {"loss_rec": self.lap(out["student"].float(), gi),
                             "loss_teacher": self.lap(out["teacher"].float(), gi),
                             "loss_distill": out["distill"].float()}
                    loss = parts["loss_rec"] + parts["loss_teacher"] + tc.lambda_distill * parts["loss_distill"]
                    if "flow" in out:  # ZAugNet-C: the flow branch also learns to predict on its own
                        parts["loss_flow"] = self.lap(out["flow"].float(), gi)
                        loss = loss + parts["loss_flow"]
                    if self.critic is not None:
                        parts["loss_adv"] = -_unwrap(self.critic)(out["student"]).float().mean()
                        loss = loss + tc.lambda_adv * parts["loss_adv"]
                    (loss / n).backward()
                for key, value in {"loss_g": loss, **parts}.items():
                    logs[key] = logs.get(key, 0.0) + float(value.detach()) / n
            self.opt_g.step()
        return logs

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Laplacian loss, PSNR and SSIM of the student on the fixed validation set (normalised [0, 1] scale),
        with linear interpolation of the pair as the baseline."""
        if self.val_set is None:
            return {}
        x_all, gt_all = self.val_set
        student = _unwrap(self.generator).student.eval()
        preds = []
        bs = self.config.train.batch_size
        for i in range(0, len(x_all), bs):
            with self.autocast():
                preds.append(student(x_all[i:i + bs].to(self.device)).float().cpu())
        student.train()
        pred = torch.cat(preds)
        net = self.config.net
        i = net.n_slices // 2 - 1  # channel of slice_0
        z = x_all[:, -1:] if net.with_dpm else torch.full_like(gt_all, 0.5)
        linear = x_all[:, i:i + 1] * (1 - z) + x_all[:, i + 1:i + 2] * z
        gt = gt_all.numpy()[:, 0]
        return {
            "val_loss": float(self.lap(pred.to(self.device), gt_all.to(self.device))),
            "val_psnr": float(np.mean([psnr(p, g) for p, g in zip(pred.numpy()[:, 0], gt)])),
            "val_ssim": float(np.mean([ssim(p, g) for p, g in zip(pred.numpy()[:, 0], gt)])),
            "val_psnr_linear": float(np.mean([psnr(p, g) for p, g in zip(linear.numpy()[:, 0], gt)])),
        }

    # ------------------------------------------------------------------ loop
    def fit(self, resume: str | Path | None = None, progress: bool = True) -> Path:
        """Train up to ``train.max_steps``; returns the path of ``final.pt``.

        ``resume`` is a checkpoint to continue from (the run then continues exactly as if uninterrupted).
        """
        tc = self.config.train
        if resume is not None:
            self.load_state(resume)
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_yaml(self.config, self.run_dir / CONFIG)
        val_every = tc.val_every or self.steps_per_epoch
        t0 = time.perf_counter()
        bar = tqdm(total=tc.max_steps, initial=self.step, disable=not progress or self.rank != 0,
                   desc="train", unit="step", dynamic_ncols=True)
        self.generator.train()
        while self.step < tc.max_steps:
            x, gt = self.sampler.batch(self.rank_triplets, tc.batch_size, tc.seed, self.step, self.rank)
            logs = self.train_step(x.to(self.device), gt.to(self.device))
            self.step += 1
            for k, v in logs.items():
                total, count = self.pending.get(k, [0.0, 0])
                self.pending[k] = [total + v, count + 1]
            bar.update(1)
            if "loss_g" in logs:
                bar.set_postfix(loss=f"{logs['loss_g']:.4f}")
            last = self.step == tc.max_steps
            if self.step % val_every == 0 or last:
                row = {"step": self.step, "epoch": self.step / self.steps_per_epoch,
                       "seconds": time.perf_counter() - t0}
                row.update({k: total / count for k, (total, count) in self.pending.items()})
                row.update(self.validate())
                self.history.append(row)
                self.pending = {}
                if self.rank == 0:
                    self._write_metrics()
            if self.rank == 0 and (self.step % tc.checkpoint_every == 0 and not last):
                save_checkpoint(checkpoint_path(self.run_dir, self.step), self.state())
        bar.close()
        final = self.run_dir / FINAL
        if self.rank == 0:
            save_checkpoint(final, self.state())
        if self.world > 1:
            dist.barrier()
        return final

    def _write_metrics(self) -> None:
        write_csv(self.history, self.run_dir / METRICS, columns(self.history))
        plot_training_curves(self.history, self.run_dir / CURVES)
