import numpy as np
import pytest
import torch

from lungaudit.config import ClsConfig
from lungaudit.training.cls import ClsDataset
from lungaudit.training.loop import train_loader
from lungaudit.training.sampling import EpochSampler


def _batches(seed, workers=0, epoch=0, stretched=False):
    rng = np.random.default_rng(0)
    images = rng.random((24, 32, 32), dtype=np.float32)
    masks = np.zeros((24, 32, 32), np.uint8)
    masks[:, 8:24, 8:24] = 1
    labels = np.arange(24) % 4
    ds = ClsDataset(images, masks, labels, ClsConfig(mask_prob=0.5), seed=seed)
    ds.set_epoch(epoch)
    sampler = None
    if stretched:  # the small-set path: 7 steps of 8 from 24 images, class-balanced
        sampler = EpochSampler(labels, 8, 7, balanced=True, seed=seed)
        sampler.set_epoch(epoch)
    loader = train_loader(ds, 8, seed, torch.device("cpu"), workers, sampler=sampler)
    return [(x.clone(), y.clone(), m.clone()) for x, y, m in loader]


@pytest.mark.parametrize("workers,stretched", [(0, False), (2, False), (0, True), (2, True)])
def test_same_seed_same_batches_in_same_order(workers, stretched):
    a, b = _batches(3, workers, stretched=stretched), _batches(3, workers, stretched=stretched)
    assert len(a) == (7 if stretched else 3)
    for (xa, ya, ma), (xb, yb, mb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ma, mb)


def test_other_seed_or_epoch_differs():
    a = _batches(3)
    assert not all(torch.equal(x, y) for (x, *_), (y, *_) in zip(a, _batches(4)))
    assert not all(torch.equal(x, y) for (x, *_), (y, *_) in zip(a, _batches(3, epoch=1)))


def test_same_seed_bit_identical_training_also_across_a_resume(tiny_synth, tmp_path):
    """The small-set path (stretched, class-balanced epochs) trains bit-identically on CPU, and an
    interrupted run resumed at epoch 1 ends with exactly the weights of an uninterrupted one."""
    from lungaudit.runs.checkpoint import load_checkpoint
    from lungaudit.training.pipeline import train
    from pipeline_helpers import tiny_config

    extra = ("cls.epochs=2", "cls.min_epoch_steps=3", "cls.balance=sampler", "cls.translate=0.05", "cls.gamma=0.2")
    states = []
    for name in ("a", "b"):
        result = train(tiny_config(tiny_synth, tmp_path / name, *extra), stage="cls")
        states.append(load_checkpoint(result.run_dir / "weights" / "cls_last.pt").model_state)
    run_dir = tmp_path / "c" / "train" / "exp"
    cfg = tiny_config(tiny_synth, tmp_path / "c", *extra)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, stage="cls", run_dir=run_dir, interrupt_after=("cls", 1))
    train(cfg, stage="cls", run_dir=run_dir, resume=True)
    states.append(load_checkpoint(run_dir / "weights" / "cls_last.pt").model_state)
    for other in states[1:]:
        assert all(torch.equal(states[0][k], other[k]) for k in states[0])
