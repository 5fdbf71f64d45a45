import numpy as np
import pytest
import torch

from lungaudit.config import ClsConfig
from lungaudit.training.cls import ClsDataset
from lungaudit.training.loop import train_loader


def _batches(seed, workers=0, epoch=0):
    rng = np.random.default_rng(0)
    images = rng.random((24, 32, 32), dtype=np.float32)
    masks = np.zeros((24, 32, 32), np.uint8)
    masks[:, 8:24, 8:24] = 1
    ds = ClsDataset(images, masks, np.arange(24) % 4, ClsConfig(mask_prob=0.5), seed=seed)
    ds.set_epoch(epoch)
    return [(x.clone(), y.clone(), m.clone()) for x, y, m in train_loader(ds, 8, seed, torch.device("cpu"), workers)]


@pytest.mark.parametrize("workers", [0, 2])
def test_same_seed_same_batches_in_same_order(workers):
    a, b = _batches(3, workers), _batches(3, workers)
    for (xa, ya, ma), (xb, yb, mb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ma, mb)


def test_other_seed_or_epoch_differs():
    a = _batches(3)
    assert not all(torch.equal(x, y) for (x, *_), (y, *_) in zip(a, _batches(4)))
    assert not all(torch.equal(x, y) for (x, *_), (y, *_) in zip(a, _batches(3, epoch=1)))
