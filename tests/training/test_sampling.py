"""Epoch length for small sets and class-balanced draws (seeded, pure arithmetic)."""

import numpy as np
import pytest
import torch

from lungaudit.config import ClsConfig
from lungaudit.training.cls import ClsDataset
from lungaudit.training.loop import train_loader
from lungaudit.training.sampling import EpochSampler, epoch_draws, epoch_indices, steps_per_epoch


@pytest.mark.parametrize(
    "n,batch,min_steps,draws,steps",
    [
        (110, 32, 16, 512, 16),  # a small real set is stretched to 16 steps
        (544, 32, 16, 544, 17),  # the phantoms' 544 training images are not
        (110, 32, 0, 110, 3),  # min_steps 0: one pass, the last partial batch dropped
        (20, 32, 0, 20, 1),  # fewer images than a batch: one (partial) step
        (20, 8, 5, 40, 5),
    ],
)
def test_epoch_arithmetic(n, batch, min_steps, draws, steps):
    assert epoch_draws(n, batch, min_steps) == draws
    assert steps_per_epoch(draws, batch) == steps


def test_epoch_draws_refuses_empty():
    with pytest.raises(ValueError):
        epoch_draws(0, 32, 16)


def test_unbalanced_draws_visit_every_image_equally():
    labels = np.array([0] * 90 + [1] * 10)
    idx = epoch_indices(labels, 250, balanced=False, rng=np.random.default_rng(0))
    counts = np.bincount(idx, minlength=100)
    assert len(idx) == 250 and counts.min() == 2 and counts.max() == 3
    assert abs((labels[idx] == 1).mean() - 0.1) < 0.02  # the set's own proportions


def test_balanced_draws_give_each_class_an_equal_share():
    labels = np.array([0] * 90 + [1] * 10 + [2] * 30)
    idx = epoch_indices(labels, 301, balanced=True, rng=np.random.default_rng(0))
    shares = np.bincount(labels[idx], minlength=3)
    assert shares.sum() == 301 and shares.max() - shares.min() <= 1
    rare = np.bincount(idx[labels[idx] == 1], minlength=100)[90:100]
    assert rare.min() == 10 and rare.max() <= 11  # the rare class cycles through all its images


def test_sampler_is_seeded_per_epoch_and_marks_repeats():
    labels = np.arange(10) % 2
    sampler = EpochSampler(labels, batch_size=4, min_steps=6, balanced=True, seed=3)
    first = list(sampler)
    assert len(first) == len(sampler) == 24 and list(EpochSampler(labels, 4, 6, True, 3)) == first
    counts = np.bincount([v % 10 for v in first], minlength=10)
    assert counts.min() == 2 and counts.max() == 3  # each class of 5 gets 12 draws
    assert len(set(first)) == 24  # repeats of an image carry different virtual indices
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_stretched_loader_gives_each_repeat_its_own_masking_draw():
    rng = np.random.default_rng(0)
    images = rng.random((6, 16, 16), dtype=np.float32)
    masks = np.ones((6, 16, 16), np.uint8)
    labels = np.arange(6) % 2
    cfg = ClsConfig(mask_prob=0.5, batch_size=4, min_epoch_steps=25)
    ds = ClsDataset(images, masks, labels, cfg, seed=0)
    sampler = EpochSampler(labels, cfg.batch_size, cfg.min_epoch_steps, False, seed=0)
    loader = train_loader(ds, cfg.batch_size, 0, torch.device("cpu"), sampler=sampler)
    assert len(loader) == 25
    flags = torch.cat([m for _x, _y, m in loader])
    assert 0.35 < flags.float().mean().item() < 0.65  # not one draw per image repeated 16 times
