"""The epoch loop shared by both stages: AdamW, cosine schedule, early stopping, last/best checkpoints.

A stage supplies its model, a loader, a loss function and an evaluation function; this module owns
everything about epochs, checkpoints, resumption and device placement.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from lungaudit.training.callbacks import TrainCallback
from lungaudit.training.checkpoint import Checkpoint, check_same_model, load_checkpoint, save_checkpoint
from lungaudit.training.rundir import MetricsLog
from lungaudit.training.stopping import StopState, rule_for, stopping_step

log = logging.getLogger(__name__)


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


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no grad scaler needed), a no-op on CPU where it would only slow down."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if device.type == "cuda" and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def run_stage(
    stage: Stage,
    weights_dir: Path,
    metrics: MetricsLog,
    device: torch.device,
    callback: TrainCallback,
    resume: bool = False,
    interrupt_after_epoch: int | None = None,
) -> Checkpoint:
    """Train ``stage`` to completion (or early stop) and return its best checkpoint.

    ``interrupt_after_epoch`` raises KeyboardInterrupt after that epoch's checkpoint is written; the
    tests use it to simulate a crash without killing the process.
    """
    weights_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = weights_dir / f"{stage.kind}_last.pt", weights_dir / f"{stage.kind}_best.pt"
    model = prepare_model(stage.model, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage.lr, weight_decay=stage.weight_decay)
    steps_per_epoch = max(1, len(stage.loader))
    total_steps = stage.epochs * steps_per_epoch
    warmup = min(steps_per_epoch, max(1, total_steps // 20))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_with_warmup(s, warmup, total_steps))

    rule = rule_for(stage.patience, stage.chance, stage.stop_margin, stage.min_epochs, stage.epochs)
    start_epoch, best, bad_epochs = 0, -math.inf, 0
    if resume and last_path.is_file():
        ckpt = load_checkpoint(last_path, kind=stage.kind, class_names=stage.class_names, map_location=device)
        check_same_model(ckpt, stage.config, stage.model_keys, last_path)
        model.load_state_dict(ckpt.model_state)
        if ckpt.optimizer_state:
            optimizer.load_state_dict(ckpt.optimizer_state)
        if ckpt.scheduler_state:
            scheduler.load_state_dict(ckpt.scheduler_state)
        start_epoch, best, bad_epochs = ckpt.epoch, ckpt.best_metric, ckpt.bad_epochs
        callback.message(f"{stage.kind}: resuming after epoch {start_epoch} (best score {best:.4f})")
        if (ckpt.extra or {}).get("finished"):
            metrics.truncate(stage.kind, start_epoch)
            return load_checkpoint(best_path, kind=stage.kind, class_names=stage.class_names, map_location=device)
    metrics.truncate(stage.kind, start_epoch)

    callback.stage_start(stage.kind, start_epoch, stage.epochs, steps_per_epoch)
    finished = start_epoch >= stage.epochs
    for epoch in range(start_epoch, stage.epochs):
        t0 = time.perf_counter()
        for owner in (stage.loader.dataset, stage.loader.sampler):  # reseed augmentation and draws
            set_epoch = getattr(owner, "set_epoch", None)
            if set_epoch is not None:
                set_epoch(epoch)
        model.train()
        totals: dict[str, float] = {}
        n_batches = 0
        for step, batch in enumerate(stage.loader):
            with autocast(device):
                loss, stats = stage.loss_fn(model, batch, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            n_batches += 1
            for k, v in {"loss": float(loss.detach()), **stats}.items():
                totals[k] = totals.get(k, 0.0) + v
            callback.step(stage.kind, epoch, step, float(loss.detach()))
        train_time = time.perf_counter() - t0
        model.eval()
        val = stage.evaluate(model)
        score = val["score"]
        if not math.isfinite(score):
            # No validation images (e.g. a small segmentation-only set used whole for training):
            # fall back to the training loss, so "best" still means something.
            score = -totals.get("loss", 0.0) / max(n_batches, 1)
        state, improved, stop = stopping_step(StopState(best, bad_epochs), score, epoch + 1, rule)
        best, bad_epochs = state.best, state.bad_epochs
        finished = stop or epoch + 1 == stage.epochs
        row = {
            "stage": stage.kind,
            "epoch": epoch + 1,
            **{f"train_{k}": v / max(n_batches, 1) for k, v in totals.items()},
            **{f"val_{k}": v for k, v in val.items()},
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_time_s": time.perf_counter() - t0,
            "train_time_s": train_time,
            "images_per_s": n_batches * (stage.loader.batch_size or 1) / max(train_time, 1e-9),
        }
        ckpt = Checkpoint(
            kind=stage.kind,
            config=stage.config,
            class_names=stage.class_names,
            model_state={k: v.detach().cpu() for k, v in model.state_dict().items()},
            epoch=epoch + 1,
            best_metric=best,
            bad_epochs=bad_epochs,
            optimizer_state=optimizer.state_dict(),
            scheduler_state=scheduler.state_dict(),
            extra={"finished": finished, "val": {k: float(v) for k, v in val.items()}},
        )
        if improved:
            save_checkpoint(Checkpoint(**{**ckpt.__dict__, "optimizer_state": None, "scheduler_state": None}), best_path)
        # last.pt is written after best.pt so a crash in between never leaves "last" ahead of "best".
        save_checkpoint(ckpt, last_path)
        metrics.append(row)
        callback.epoch_end(stage.kind, row)
        if interrupt_after_epoch is not None and epoch + 1 == interrupt_after_epoch:
            raise KeyboardInterrupt(f"simulated interruption after {stage.kind} epoch {epoch + 1}")
        if stop:
            callback.message(f"{stage.kind}: early stop after epoch {epoch + 1} (no gain for {bad_epochs} epochs)")
            break
    callback.stage_end(stage.kind, {"best_score": best, "finished": finished})
    return load_checkpoint(best_path, kind=stage.kind, class_names=stage.class_names, map_location=device)


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

    def __init__(self, images: np.ndarray, transform: Any, seed: int) -> None:
        self.images, self.transform, self.seed = images, transform, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.transform is not None:
            self.transform.set_random_seed(self.seed * 10_007 + epoch)

    def __len__(self) -> int:
        return len(self.images)


def _reseed_worker(worker_id: int) -> None:
    """Give each loader worker its own augmentation stream, derived from (seed, epoch, worker)."""
    ds = get_worker_info().dataset
    if getattr(ds, "transform", None) is not None:
        ds.transform.set_random_seed(ds.seed * 10_007 + ds.epoch * 101 + worker_id + 1)


def train_loader(
    dataset: Dataset, batch_size: int, seed: int, device: torch.device, num_workers: int = 0, sampler: Sampler | None = None
) -> DataLoader:
    """Shuffled, seeded loader: the same seed gives the same batches in the same order.

    A ``sampler`` (which then owns the order, e.g. :class:`~lungaudit.training.sampling.EpochSampler`)
    replaces the shuffle; a last partial batch is dropped whenever there is more than one batch.
    """
    n = len(sampler) if sampler is not None else len(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=n > batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed) if sampler is None else None,
        worker_init_fn=_reseed_worker if num_workers > 0 else None,
    )
