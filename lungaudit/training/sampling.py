"""Which training images an epoch visits: epoch length for small sets and class-balanced draws.

A fixed epoch count gives a small set almost no optimizer updates: 110 images at batch 32 are three
steps an epoch, so the 14 epochs that train the phantoms (17 steps each) are 42 updates, and the
model never leaves chance. Here an epoch is stretched to at least ``min_steps`` steps by visiting
the set several times (each visit with fresh augmentation and fresh masking draws), so the number
of updates, evaluations and the meaning of ``patience`` stay the same whatever the set's size.

Draws are made from a generator seeded by (seed, epoch), so an epoch is the same whether the run
went straight through or was resumed at it, and independent of loader workers.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
from torch.utils.data import Sampler

BALANCE_MODES: tuple[str, ...] = ("weights", "sampler", "none")


def epoch_draws(n: int, batch_size: int, min_steps: int) -> int:
    """Items one epoch visits: ``n``, or ``min_steps`` full batches when that is more.

    >>> epoch_draws(110, 32, 16), epoch_draws(544, 32, 16), epoch_draws(110, 32, 0)
    (512, 544, 110)
    """
    if n <= 0 or batch_size <= 0:
        raise ValueError(f"need n > 0 and batch_size > 0, got n={n}, batch_size={batch_size}")
    return max(n, min_steps * batch_size)


def steps_per_epoch(draws: int, batch_size: int) -> int:
    """Optimizer steps for ``draws`` items: full batches only, but at least one."""
    return max(1, draws // batch_size) if draws > batch_size else 1


def epoch_indices(labels: np.ndarray, draws: int, balanced: bool, rng: np.random.Generator) -> np.ndarray:
    """``draws`` indices into ``labels`` for one epoch, in training order.

    Unbalanced: whole permutations of the set, one after another, so every image is seen equally
    often (a repeated set is not sampled with replacement). Balanced: every class present gets the
    same share of the draws (up to one item of rounding), each class cycling through permutations of
    its own images the same way; a rare class is therefore repeated, never left out.
    """
    labels = np.asarray(labels)
    if not balanced:
        return _cycled(np.arange(len(labels)), draws, rng)
    classes = np.unique(labels)
    shares = np.full(len(classes), draws // len(classes))
    shares[rng.permutation(len(classes))[: draws - shares.sum()]] += 1  # the remainder, fairly
    parts = [_cycled(np.flatnonzero(labels == c), k, rng) for c, k in zip(classes, shares)]
    return rng.permutation(np.concatenate(parts))


def _cycled(pool: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    reps = math.ceil(k / len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(reps)])[:k]


class EpochSampler(Sampler[int]):
    """Yields *virtual* indices ``repeat * n + i`` so a dataset can tell repeats of image ``i`` apart.

    A dataset maps a virtual index back with ``v % n``; using ``v`` itself to seed per-item draws
    (e.g. whether the item is lung-masked) gives each repeat its own draw.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, min_steps: int, balanced: bool, seed: int) -> None:
        self.labels, self.balanced, self.seed = np.asarray(labels), balanced, seed
        self.draws = epoch_draws(len(self.labels), batch_size, min_steps)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.draws

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch, 7919])
        idx = epoch_indices(self.labels, self.draws, self.balanced, rng)
        # Number each occurrence of an image within the epoch (0 for the first, 1 for the next...).
        order = np.argsort(idx, kind="stable")
        occurrence = np.empty(len(idx), np.int64)
        sorted_idx = idx[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_idx)) + 1]
        counts = np.diff(np.r_[starts, len(idx)])
        occurrence[order] = np.arange(len(idx)) - np.repeat(starts, counts)
        return iter((occurrence * len(self.labels) + idx).tolist())
