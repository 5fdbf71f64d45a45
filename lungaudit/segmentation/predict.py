"""Batched lung-mask prediction at any input size: resize in, predict, resize back, post-process."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from lungaudit.segmentation.postprocess import postprocess_mask


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """(N, 1, S, S) float in [0, 1] on the model's device -> (N, 1, S, S) logits (float32)."""
    from lungaudit.training.loop import autocast

    device = next(model.parameters()).device
    model.eval()
    out = []
    for i in range(0, images.shape[0], batch_size):
        with autocast(device):
            out.append(model(images[i : i + batch_size].to(device)).float())
    return torch.cat(out) if out else torch.zeros_like(images)


def predict_masks(
    model: nn.Module,
    images: Sequence[np.ndarray],
    size: int,
    batch_size: int = 32,
    postprocess: bool = True,
) -> list[np.ndarray]:
    """Lung masks for (H_i, W_i) float images of any sizes, returned as bool arrays of those sizes."""
    if not len(images):
        return []
    resized = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images])
    logits = predict_logits(model, torch.from_numpy(resized[:, None]), batch_size)
    small = (logits[:, 0] > 0).cpu().numpy().astype(np.uint8)
    masks = []
    for m, im in zip(small, images):
        full = cv2.resize(m, (im.shape[1], im.shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool)
        masks.append(postprocess_mask(full) if postprocess else full)
    return masks
