"""The epoch loop shared by both stages: AdamW, cosine schedule, early stopping, last/best checkpoints.

A stage supplies its model, a loader, a loss function and an evaluation function; this module owns
everything about epochs, checkpoints, resumption and device placement.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from lungaudit import distributed as dist
from lungaudit.device import autocast, prepare_model
from lungaudit.runs.checkpoint import Checkpoint, check_same_model, load_checkpoint, save_checkpoint
from lungaudit.runs.rundir import MetricsLog
from lungaudit.training.callbacks import TrainCallback
from lungaudit.training.ddp import shard_loader, unwrap, wrap_model
from lungaudit.training.stopping import StopState, rule_for, stopping_step

log = logging.getLogger(__name__)

STREAM_STRIDE = 1_000_003  # seed distance between ranks' augmentation streams (beyond any epoch/worker offset)


@dataclass
class Stage:
    kind: str  # "seg" | "cls": also the checkpoint prefix (seg_last.pt, seg_best.pt)
    model: nn.Module
    config: dict[str, Any]  # the stage's config section, stored in the checkpoints
    model_keys: tuple[str, ...]  # config keys that shape the model; resuming refuses a change
    class_names: list[str]
    loader: DataLoader
    loss_fn: Callable[[nn.Module, Any, torch.device], tuple[torch.Tensor, dict[str, float]]]
    evaluate: Callable[[nn.Module], dict[str, float]]  # must return "score" (higher is better)
    epochs: int
    lr: float
    weight_decay: float
    patience: int  # 0 disables early stopping
    chance: float = -math.inf  # the score of a model that learnt nothing; patience waits until it is left
    stop_margin: float = 0.0  # ... by this much
    min_epochs: int = 0  # earlier epochs are neither the best checkpoint nor stopped at


@dataclass
class _Fit:
    """A stage being trained: its model, optimizer and schedule, and where its checkpoints go."""

    stage: Stage
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    last_path: Path
    best_path: Path
    world: dist.World = dist.World()

    @classmethod
    def open(cls, stage: Stage, weights_dir: Path, device: torch.device, sync_bn: bool = False) -> _Fit:
        world = dist.world()
        if world.is_main:
            weights_dir.mkdir(parents=True, exist_ok=True)
        model = prepare_model(stage.model, device)
        if world.distributed:  # each rank its share of every epoch; gradients averaged by DDP
            stage = replace(stage, loader=shard_loader(stage.loader, world))
            model = wrap_model(model, device, sync_bn, stage.loader.dataset[0][0][None])
        optimizer = torch.optim.AdamW(model.parameters(), lr=stage.lr, weight_decay=stage.weight_decay)
        total = stage.epochs * max(1, len(stage.loader))
        warmup = min(max(1, len(stage.loader)), max(1, total // 20))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_with_warmup(s, warmup, total))
        return cls(stage, model, optimizer, scheduler, device,
                   weights_dir / f"{stage.kind}_last.pt", weights_dir / f"{stage.kind}_best.pt", world)  # fmt: skip

    @property
    def net(self) -> nn.Module:
        """The model itself (inside DDP's wrapper): what is evaluated and checkpointed."""
        return unwrap(self.model)

    def best(self) -> Checkpoint:
        return self.load(self.best_path)

    def load(self, path: Path) -> Checkpoint:
        """A checkpoint of this stage; under torchrun read by rank 0 alone and handed to every rank."""
        s = self.stage
        if not self.world.distributed:
            return load_checkpoint(path, kind=s.kind, class_names=s.class_names, map_location=self.device)
        # On CPU: a pickled CUDA tensor would land on rank 0's GPU in every process.
        return dist.main_decides(lambda: load_checkpoint(path, kind=s.kind, class_names=s.class_names, map_location="cpu"))


def run_stage(
    stage: Stage,
    weights_dir: Path,
    metrics: MetricsLog,
    device: torch.device,
    callback: TrainCallback,
    resume: bool = False,
    interrupt_after_epoch: int | None = None,
    sync_bn: bool = False,
) -> Checkpoint:
    """Train ``stage`` to completion (or early stop) and return its best checkpoint.

    ``interrupt_after_epoch`` raises KeyboardInterrupt after that epoch's checkpoint is written; the
    tests use it to simulate a crash without killing the process. Under torchrun every rank calls
    this: each trains on its share of the epoch, rank 0 alone validates (on the whole validation
    set; the others receive its figures), writes checkpoints and ``metrics.csv``.
    """
    fit = _Fit.open(stage, weights_dir, device, sync_bn)
    stage, main = fit.stage, fit.world.is_main
    rule = rule_for(stage.patience, stage.chance, stage.stop_margin, stage.min_epochs, stage.epochs)
    state, start_epoch, done = StopState(-math.inf, 0), 0, False
    if resume and dist.main_decides(fit.last_path.is_file):
        state, start_epoch, done = _resume(fit, callback)
    if main:
        metrics.truncate(stage.kind, start_epoch)
    if done:
        return fit.best()
    callback.stage_start(stage.kind, start_epoch, stage.epochs, max(1, len(stage.loader)))
    finished = start_epoch >= stage.epochs
    for epoch in range(start_epoch, stage.epochs):
        t0 = time.perf_counter()
        totals, n_batches = _train_epoch(fit, epoch, callback)
        totals = dist.all_mean(totals)  # the logged training loss covers every rank's batches
        train_time = time.perf_counter() - t0
        val = _validate(fit)
        score = val["score"]
        if not math.isfinite(score):
            # No validation images (e.g. a small segmentation-only set used whole for training):
            # fall back to the training loss, so "best" still means something.
            score = -totals.get("loss", 0.0) / max(n_batches, 1)
        state, improved, stop = stopping_step(state, score, epoch + 1, rule)
        finished = stop or epoch + 1 == stage.epochs
        if main:
            _save_epoch(fit, epoch + 1, state, val, improved, finished)
        row = {
            "stage": stage.kind, "epoch": epoch + 1,
            **{f"train_{k}": v / max(n_batches, 1) for k, v in totals.items()},
            **{f"val_{k}": v for k, v in val.items()},
            "lr": fit.optimizer.param_groups[0]["lr"], "epoch_time_s": time.perf_counter() - t0, "train_time_s": train_time,
            "images_per_s": n_batches * (stage.loader.batch_size or 1) * fit.world.size / max(train_time, 1e-9),
        }  # fmt: skip
        if main:
            metrics.append(row)
        callback.epoch_end(stage.kind, row)
        if interrupt_after_epoch is not None and epoch + 1 == interrupt_after_epoch:
            raise KeyboardInterrupt(f"simulated interruption after {stage.kind} epoch {epoch + 1}")
        if stop:
            callback.message(f"{stage.kind}: early stop after epoch {epoch + 1} (no gain for {state.bad_epochs} epochs)")
            break
    callback.stage_end(stage.kind, {"best_score": state.best, "finished": finished})
    return fit.best()


def _resume(fit: _Fit, callback: TrainCallback) -> tuple[StopState, int, bool]:
    """Restore model, optimizer and schedule from ``last.pt``; returns (stop state, epochs done, finished)."""
    s = fit.stage
    ckpt = fit.load(fit.last_path)  # every rank resumes from the same last.pt: rank 0's
    check_same_model(ckpt, s.config, s.model_keys, fit.last_path)
    fit.net.load_state_dict(ckpt.model_state)
    if ckpt.optimizer_state:
        fit.optimizer.load_state_dict(ckpt.optimizer_state)
    if ckpt.scheduler_state:
        fit.scheduler.load_state_dict(ckpt.scheduler_state)
    callback.message(f"{s.kind}: resuming after epoch {ckpt.epoch} (best score {ckpt.best_metric:.4f})")
    return StopState(ckpt.best_metric, ckpt.bad_epochs), ckpt.epoch, bool((ckpt.extra or {}).get("finished"))


def _validate(fit: _Fit) -> dict[str, float]:
    """The stage's validation figures; under torchrun computed by rank 0 and handed to every rank,
    which all need the score to agree on the best epoch and on early stopping."""
    fit.model.eval()
    if not fit.world.distributed:
        return fit.stage.evaluate(fit.model)
    return dist.main_decides(lambda: fit.stage.evaluate(fit.net))


def _train_epoch(fit: _Fit, epoch: int, callback: TrainCallback) -> tuple[dict[str, float], int]:
    """One pass over the loader; returns summed per-batch statistics and the number of batches."""
    loader = fit.stage.loader
    for owner in (loader.dataset, loader.sampler):  # reseed augmentation and draws from (seed, epoch)
        set_epoch = getattr(owner, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
    fit.model.train()
    totals: dict[str, float] = {}
    n_batches = 0
    for step, batch in enumerate(loader):
        with autocast(fit.device):
            loss, stats = fit.stage.loss_fn(fit.model, batch, fit.device)
        fit.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        fit.optimizer.step()
        fit.scheduler.step()
        n_batches += 1
        for k, v in {"loss": float(loss.detach()), **stats}.items():
            totals[k] = totals.get(k, 0.0) + v
        callback.step(fit.stage.kind, epoch, step, float(loss.detach()))
    return totals, n_batches


def _save_epoch(fit: _Fit, epochs_done: int, state: StopState, val: dict[str, float], improved: bool, finished: bool) -> None:
    """``best.pt`` (weights only) when the score improved, then ``last.pt`` (everything to resume)."""
    s = fit.stage
    ckpt = Checkpoint(
        kind=s.kind, config=s.config, class_names=s.class_names,
        model_state={k: v.detach().cpu() for k, v in fit.net.state_dict().items()},
        epoch=epochs_done, best_metric=state.best, bad_epochs=state.bad_epochs,
        optimizer_state=fit.optimizer.state_dict(), scheduler_state=fit.scheduler.state_dict(),
        extra={"finished": finished, "val": {k: float(v) for k, v in val.items()}},
    )  # fmt: skip
    if improved:
        save_checkpoint(Checkpoint(**{**ckpt.__dict__, "optimizer_state": None, "scheduler_state": None}), fit.best_path)
    # last.pt is written after best.pt so a crash in between never leaves "last" ahead of "best".
    save_checkpoint(ckpt, fit.last_path)


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up then cosine decay to 5% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def batches(n: int, size: int) -> Iterator[slice]:
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


class EpochSeededDataset(Dataset):
    """In-memory images plus an augmentation pipeline reseeded from (seed, epoch) every epoch.

    Reseeding per epoch (rather than once) makes epoch k identical whether a run went straight
    through or was resumed at k, which is what makes ``--resume`` reproduce an uninterrupted run.
    """

    stream = 0  # under torchrun the rank: each rank augments from its own stream, rank 0 the usual one

    def __init__(self, images: np.ndarray, transform: Any, seed: int) -> None:
        self.images, self.transform, self.seed = images, transform, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.transform is not None:
            self.transform.set_random_seed(self.seed * 10_007 + epoch + STREAM_STRIDE * self.stream)

    def __len__(self) -> int:
        return len(self.images)


def _reseed_worker(worker_id: int) -> None:
    """Give each loader worker its own augmentation stream, derived from (seed, epoch, worker)."""
    ds = get_worker_info().dataset
    if getattr(ds, "transform", None) is not None:
        ds.transform.set_random_seed(ds.seed * 10_007 + ds.epoch * 101 + worker_id + 1 + STREAM_STRIDE * ds.stream)


class EpochShuffleSampler(Sampler[int]):
    """A permutation of ``range(n)`` drawn from a generator seeded by (seed, epoch).

    A loader's own ``generator`` is seeded once and advances with every epoch, so a run resumed at
    epoch k (a fresh generator) would see epoch 0's order again. Reseeding from (seed, epoch) makes
    epoch k's order the same whether the run went straight through or was resumed at k.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


def train_loader(
    dataset: Dataset, batch_size: int, seed: int, device: torch.device, num_workers: int = 0, sampler: Sampler | None = None
) -> DataLoader:
    """Shuffled, seeded loader: the same (seed, epoch) gives the same batches in the same order.

    A ``sampler`` (e.g. :class:`~lungaudit.training.sampling.EpochSampler`) replaces the default
    :class:`EpochShuffleSampler`; ``run_stage`` calls ``set_epoch`` on it before each epoch. A last
    partial batch is dropped whenever there is more than one batch.
    """
    sampler = sampler if sampler is not None else EpochShuffleSampler(len(dataset), seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=len(sampler) > batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        # Still seeded: the loader draws its workers' base seed from it every epoch.
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=_reseed_worker if num_workers > 0 else None,
    )
