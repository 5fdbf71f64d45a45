"""Batched lung-mask prediction: on device tensors (the audit) or on numpy images of any size."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lungaudit.device import autocast
from lungaudit.segmentation.postprocess import postprocess_mask


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """(N, 1, S, S) float in [0, 1] -> (N, 1, S, S) float32 logits on the model's device."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    for i in range(0, images.shape[0], batch_size):
        with autocast(device):
            out.append(model(images[i : i + batch_size].to(device)).float())
    return torch.cat(out) if out else torch.zeros_like(images, device=device)


@torch.no_grad()
def segment_batch(model: nn.Module, x: torch.Tensor, seg_size: int) -> torch.Tensor:
    """Lung masks for a batch already on the device, at the batch's own resolution.

    Args:
        x: (N, 1, H, W) float in [0, 1] on the model's device.
        seg_size: the side the segmenter was trained at; ``x`` is resized to it and the logits back.

    Returns:
        (N, H, W) bool. No OpenCV post-processing: this runs inside the audit's hot path, where the
        masks only weigh heatmap energy, and the tolerant E_in already absorbs ragged edges.
    """
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"x must be (N, 1, H, W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    seg_in = x if (h, w) == (seg_size, seg_size) else F.interpolate(x, size=(seg_size, seg_size), mode="bilinear", align_corners=False)
    logits = predict_logits(model, seg_in, batch_size=max(1, len(seg_in)))
    if logits.shape[-2:] != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits[:, 0] > 0


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
