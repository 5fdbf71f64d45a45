"""DistributedDataParallel for the epoch loop: a rank's share of each epoch, and the wrapped model.

The split of work keeps a run on N processes on the schedule of a run in one process:

* ``batch_size`` in the config is the **global** batch; each rank takes ``batch_size / N`` of it.
* Every rank draws the same global epoch order (the single-process sampler, seeded by (seed, epoch),
  so stretched and class-balanced epochs compose), and rank ``r`` takes items ``r, r + N, ...``.
  With the per-rank batch, step ``k`` of the N ranks together covers exactly the items of step ``k``
  of a single process, and DDP averages their gradients: the same images per step, the same number
  of steps per epoch, the same LR schedule. What differs is only what must: each rank's BatchNorm
  sees its part of the batch (unless ``dist.sync_bn``), and each rank augments from its own stream.
"""

from __future__ import annotations

import logging
import math
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from lungaudit.distributed import World
from lungaudit.training.sampling import EpochSampler

log = logging.getLogger(__name__)


class RankSampler(Sampler[int]):
    """Rank ``rank``'s strided share of ``base``'s epoch order, padded (by wrapping) so every rank
    yields the same number of items: DDP ranks must take the same number of steps or they hang."""

    def __init__(self, base: Sampler[int], rank: int, size: int) -> None:
        self.base, self.rank, self.size = base, rank, size

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return math.ceil(len(self.base) / self.size)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        order = list(self.base)
        pad = len(self) * self.size - len(order)
        order += order[:pad]
        return iter(order[self.rank :: self.size])


def check_batch(batch_size: int, size: int, what: str) -> None:
    """Refuse a global batch that the ranks cannot share evenly (before anything is written)."""
    if batch_size % size:
        raise ValueError(
            f"{what}={batch_size} is the global batch and must be divisible by the {size} processes "
            f"(each takes batch_size / {size}); choose a multiple of {size}"
        )


def shard_loader(loader: DataLoader, world: World) -> DataLoader:
    """The same loader for one rank: the epoch order shared, the batch divided.

    A loader without an epoch-seeded sampler (plain shuffle) gets the one-pass
    :class:`~lungaudit.training.sampling.EpochSampler`: a permutation seeded by (seed, epoch) that
    every rank computes alike.
    """
    dataset = loader.dataset
    base = loader.sampler if hasattr(loader.sampler, "set_epoch") else None
    if base is None:
        n = len(dataset)  # type: ignore[arg-type]
        base = EpochSampler(np.zeros(n, np.int64), max(1, loader.batch_size or 1), 0, False, int(getattr(dataset, "seed", 0)))
    # Each rank augments from its own stream (rank 0's is the single-process one).
    if hasattr(dataset, "stream"):
        dataset.stream = world.rank  # type: ignore[attr-defined]
    per_rank = (loader.batch_size or 1) // world.size
    return DataLoader(
        dataset,
        batch_size=per_rank,
        sampler=RankSampler(base, world.rank, world.size),
        drop_last=loader.drop_last,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
        persistent_workers=loader.persistent_workers,
    )


def wrap_model(model: nn.Module, device: torch.device, sync_bn: bool, example: torch.Tensor) -> nn.Module:
    """``model`` (already on ``device``) in DistributedDataParallel, with SyncBatchNorm if asked and possible.

    ``example`` is one input (1, C, H, W) used to find parameters the forward never reaches.
    """
    from torch.nn.parallel import DistributedDataParallel

    if sync_bn:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            # torch's SyncBatchNorm runs on accelerators only; one config file should still run in CI on CPU.
            log.warning("dist.sync_bn needs CUDA devices; keeping per-process BatchNorm on %s", device)
    unused = has_unused_parameters(model, example.to(device))
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=unused)


def has_unused_parameters(model: nn.Module, example: torch.Tensor) -> bool:
    """Whether some trainable parameter gets no gradient from a forward pass.

    A U-Net on a shallow encoder keeps the encoder's deepest blocks without using them; DDP then
    waits forever for their gradients unless told to look for unused parameters, a search that
    costs a graph traversal every step, so it is switched on only for models that need it. The
    probe runs in eval mode, so BatchNorm statistics are left as they were.
    """
    was_training = model.training
    model.eval()
    try:
        model(example).float().sum().backward()
        unused = any(p.requires_grad and p.grad is None for p in model.parameters())
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return unused


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (what checkpoints store and evaluation runs), else ``model``."""
    return getattr(model, "module", model) if type(model).__name__ == "DistributedDataParallel" else model


__all__ = ["RankSampler", "check_batch", "shard_loader", "unwrap", "wrap_model"]
