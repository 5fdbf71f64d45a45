import numpy as np
import pytest
import torch

from lungaudit.segmentation.metrics import dice_iou
from lungaudit.segmentation.postprocess import postprocess_mask


def test_keeps_two_largest_components_and_fills_holes():
    m = np.zeros((40, 40), bool)
    m[5:30, 3:15] = True  # left lung
    m[5:30, 22:36] = True  # right lung
    m[10:14, 6:9] = False  # a hole
    m[35:37, 35:37] = True  # a speck
    out = postprocess_mask(m)
    assert out[12, 7] and not out[36, 36]
    assert out.sum() == 25 * 12 + 25 * 14


def test_dice_iou_by_hand():
    p = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    t = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    p[0, 0, :2] = True  # 8 px
    t[0, 0, :1] = True  # 4 px, all inside p
    dice, iou = dice_iou(p, t)
    assert dice[0].item() == pytest.approx(2 * 4 / (8 + 4))
    assert iou[0].item() == pytest.approx(4 / 8)
    assert dice[1].item() == 1.0  # both empty: perfect, not NaN
