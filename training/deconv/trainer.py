"""The ZS-DeconvNet training loop: checkpoints, exact resume, validation on the held-out z-block, metrics.csv.

The run folder has ZAugNet's layout (:mod:`zaugnet.training.runs`): ``config.yaml``, ``checkpoints/step_*.pt``,
``final.pt``, ``metrics.csv``. One process, one device; batch ``step`` is drawn from ``(seed, step)`` and the
learning rate is a function of the step (:meth:`~.config.DeconvTrainConfig.lr_at`), so a resumed run continues
exactly as an uninterrupted one. With ``train.average_from`` every checkpoint also holds the mean of the weights
at each multiple of ``checkpoint_every`` from that step on (``average``), which the model predicts with.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from zaugnet import __version__
from zaugnet.devices import pick_device
from zaugnet.errors import InputError
from zaugnet.tables import columns, write_csv

from ..checkpoint import save_checkpoint
from ..runs import CONFIG, FINAL, METRICS, checkpoint_path, step_checkpoints
from .checkpoint import load_deconv_checkpoint
from .config import FAMILY, DeconvConfig, save_deconv_yaml
from .data import PatchSampler, TrainingVolumes, validation_windows
from .losses import DeconvLoss
from .nets import ZSDeconvNet3D

__all__ = ["DeconvTrainer"]


class DeconvTrainer:
    """Trains a two-stage 3D ZS-DeconvNet on the odd / even slices of the user's own stacks.

    Parameters
    ----------
    config
        The validated run configuration.
    data
        The normalised training volumes (:func:`~.data.load_training_volumes`).
    psf
        The loss's PSF (:func:`~.data.training_psf`).
    run_dir
        The run folder.
    """

    def __init__(self, config: DeconvConfig, data: TrainingVolumes, psf: np.ndarray, run_dir: str | Path) -> None:
        self.config = config
        self.data = data
        self.psf = np.asarray(psf, dtype=np.float32)
        self.run_dir = Path(run_dir)
        self.device = torch.device(pick_device(config.train.device, "train.device"))
        torch.manual_seed(config.train.seed)
        self.network = ZSDeconvNet3D(config.net).to(self.device)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=config.train.lr)
        self.sampler = PatchSampler(data.volumes, config.data)
        self.val_windows = validation_windows(data.volumes, config.data.val_fraction)
        self.loss = DeconvLoss(self.psf, config.train, config.psf.padding)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.average: dict[str, torch.Tensor] | None = None  # mean of the weight snapshots (train.average_from)
        self.pending: dict[str, list[float]] = {}  # per-step logs since the last history row: name -> [sum, count]

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """Everything needed to resume exactly and to predict (plain tensors and data)."""
        return {
            "zaugnet_version": __version__,
            "kind": FAMILY,
            "config": self.config.to_dict(),
            "step": self.step,
            "network": self.network.state_dict(),
            **({"average": self.average} if self.average is not None else {}),
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
            "pending": self.pending,
            "affine": self.data.affine.to_dict(),
            "voxel_size": [float(v) for v in self.data.voxel_size],
            "psf": torch.from_numpy(self.psf),
            "data": self.data.names,
        }

    def load_state(self, path: str | Path) -> None:
        """Continue from a checkpoint of a run with the same network, data normalisation and PSF.

        Raises
        ------
        InputError
            The checkpoint cannot be read safely, or its network, affine or PSF differ from this run's.
        """
        config, state = load_deconv_checkpoint(path)
        if config.net != self.config.net:
            raise InputError(path, "its network configuration differs from this run's")
        if state.get("affine") != self.data.affine.to_dict():
            raise InputError(path, "its intensity normalisation differs from this run's (other training data?)")
        psf = state.get("psf")
        if not isinstance(psf, torch.Tensor) or psf.shape != self.psf.shape or \
                not torch.equal(psf, torch.from_numpy(self.psf)):
            raise InputError(path, "its PSF differs from this run's")
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.history = list(state.get("history", []))
        self.pending = dict(state.get("pending", {}))
        if "average" in state and self.config.train.average_from is not None:
            self.average = dict(state["average"])

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint in the run folder (by step), if any."""
        candidates = step_checkpoints(self.run_dir)
        final = self.run_dir / FINAL
        if final.exists():
            candidates[int(load_deconv_checkpoint(final)[1]["step"])] = final
        return candidates[max(candidates)] if candidates else None

    # ------------------------------------------------------------------ steps
    def train_step(self, window: torch.Tensor) -> dict[str, float]:
        """One optimiser step on a ``(B, 1, 2 Z, Y, X)`` batch at the step's learning rate."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.train.lr_at(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        total, logs = self.loss(self.network, window, swap=self.config.train.alternate and self.step % 2 == 1)
        total.backward()
        self.optimizer.step()
        return logs

    @torch.no_grad()
    def fold_snapshot(self) -> None:
        """Add the current weights to the running mean of the snapshots (``train.average_from``)."""
        weights = self.network.state_dict()
        if self.average is None:
            self.average = {k: v.float().clone() for k, v in weights.items()}
            return
        n = self.config.train.snapshots_at(self.step)
        for key, value in weights.items():
            self.average[key] += (value.float() - self.average[key]) / n

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """The loss and its terms on the held-out block of every volume (mean over volumes), prefixed ``val_``."""
        if not self.val_windows:
            return {}
        self.network.eval()
        sums: dict[str, float] = {}
        for window in self.val_windows:
            _, logs = self.loss(self.network, window.to(self.device))
            for key, value in logs.items():
                sums[key] = sums.get(key, 0.0) + value / len(self.val_windows)
        self.network.train()
        return {f"val_{k}": v for k, v in sums.items()}

    # ------------------------------------------------------------------ loop
    def fit(self, resume: str | Path | None = None, progress: bool = True) -> Path:
        """Train up to ``train.max_steps``; returns the path of ``final.pt``."""
        tc = self.config.train
        if resume is not None:
            self.load_state(resume)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_deconv_yaml(self.config, self.run_dir / CONFIG)
        t0 = time.perf_counter()
        bar = tqdm(total=tc.max_steps, initial=self.step, disable=not progress, desc="train", unit="step",
                   dynamic_ncols=True)
        self.network.train()
        while self.step < tc.max_steps:
            window = self.sampler.batch(tc.batch_size, tc.seed, self.step).to(self.device)
            logs = self.train_step(window)
            self.step += 1
            for key, value in logs.items():
                total, count = self.pending.get(key, [0.0, 0])
                self.pending[key] = [total + value, count + 1]
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}")
            last = self.step == tc.max_steps
            if self.step % tc.val_every == 0 or last:
                row: dict[str, float] = {"step": self.step, "lr": tc.lr_at(self.step - 1),
                                         "seconds": time.perf_counter() - t0}
                row.update({k: total / count for k, (total, count) in self.pending.items()})
                row.update(self.validate())
                self.history.append(row)
                self.pending = {}
                write_csv(self.history, self.run_dir / METRICS, columns(self.history))
            if tc.average_from is not None and self.step >= tc.average_from and self.step % tc.checkpoint_every == 0:
                self.fold_snapshot()
            if self.step % tc.checkpoint_every == 0 and not last:
                save_checkpoint(checkpoint_path(self.run_dir, self.step), self.state())
        bar.close()
        final = self.run_dir / FINAL
        save_checkpoint(final, self.state())
        return final
