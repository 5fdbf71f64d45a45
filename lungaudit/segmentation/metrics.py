"""Segmentation overlap metrics through MONAI (one-hot-free binary masks)."""

from __future__ import annotations

import torch
from monai.metrics import compute_iou, compute_dice


def dice_iou(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image Dice and IoU for bool/0-1 masks of shape (N, 1, H, W) -> two (N,) tensors.

    An image where both prediction and target are empty counts as a perfect 1.0, since MONAI's
    ``ignore_empty`` would otherwise turn it into NaN and drop it silently.
    """
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 1:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be (N, 1, H, W)")
    p, t = pred.float(), target.float()
    dice = compute_dice(p, t, include_background=True, ignore_empty=False).view(-1)
    iou = compute_iou(p, t, include_background=True, ignore_empty=False).view(-1)
    both_empty = (p.sum((1, 2, 3)) == 0) & (t.sum((1, 2, 3)) == 0)
    return torch.where(both_empty, 1.0, dice), torch.where(both_empty, 1.0, iou)
