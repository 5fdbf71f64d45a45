import numpy as np
import torch
from torch.utils.data import DataLoader

from lungaudit.config import ClsConfig
from lungaudit.training.cls import ClsDataset


def _data(n=200, s=16):
    images = np.full((n, s, s), 0.8, np.float32)
    masks = np.zeros((n, s, s), np.uint8)
    masks[:, 4:12, 4:12] = 1
    return images, masks, np.arange(n) % 4


def test_mask_prob_is_honoured_and_visible_in_batches():
    images, masks, labels = _data()
    for p in (0.0, 0.3, 1.0):
        ds = ClsDataset(images, masks, labels, ClsConfig(mask_prob=p, fill_value=0.0), seed=1, augment=False)
        flags, outside = [], []
        for x, y, masked in DataLoader(ds, batch_size=50):
            flags.append(masked)
            outside.append(x[:, 0, 0, 0])
        flags, outside = torch.cat(flags), torch.cat(outside)
        assert abs(flags.float().mean().item() - p) < 0.08
        # a masked item has its outside-lung pixels at the fill value, an unmasked one keeps them
        assert torch.all(outside[flags] == 0.0) and torch.all(outside[~flags] == images[0, 0, 0])


def test_masking_draws_are_reproducible_per_epoch():
    images, masks, labels = _data(64)
    ds = ClsDataset(images, masks, labels, ClsConfig(mask_prob=0.5), seed=3, augment=True)
    a = [ds[i][2] for i in range(64)]
    ds.set_epoch(1)
    b = [ds[i][2] for i in range(64)]
    ds.set_epoch(0)
    assert [ds[i][2] for i in range(64)] == a and a != b


def test_training_dilation_equals_the_audit_dilation():
    from lungaudit.audit.metrics import dilate_masks
    from lungaudit.data.arrays import dilate

    rng = np.random.default_rng(0)
    masks = (rng.random((3, 20, 20)) > 0.93).astype(np.uint8)
    ours = dilate(masks, 3)
    audit = dilate_masks(torch.from_numpy(masks), 3).numpy().astype(np.uint8)
    assert np.array_equal(ours, audit)
