"""Counterfactual inputs built on the device: the image with its probable markers painted over.

Masking everything outside the lungs answers "does the model need anything but the lungs?", but
for a model never trained on masked images that input is out of distribution and its answer is
noise. Painting over only the detected burned-in markers with their own surroundings keeps the image
in distribution; it is the auditor's estimate of the clean twin.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

Box = tuple[int, int, int, int]


def box_holes(boxes: Sequence[Sequence[Box]], shape: tuple[int, int], pad_px: int, device: torch.device) -> torch.Tensor:
    """(N, H, W) float {0,1}: each image's half-open boxes grown by ``pad_px``."""
    h, w = shape
    holes = torch.zeros(len(boxes), h, w, device=device)
    for i, bs in enumerate(boxes):
        for x0, y0, x1, y1 in bs:
            holes[i, max(0, y0 - pad_px) : min(h, y1 + pad_px), max(0, x0 - pad_px) : min(w, x1 + pad_px)] = 1
    return holes


def fill_from_surroundings(x: torch.Tensor, holes: torch.Tensor, cell: int = 8) -> torch.Tensor:
    """Replace hole pixels by the local mean of the non-hole pixels around them (normalised convolution).

    The local mean is taken on a coarse grid of ``cell``-pixel cells and interpolated back, which is
    as smooth as a large box filter at a small fraction of its cost; cells that are all hole borrow
    from their neighbours through the interpolation.

    Args:
        x: (N, 1, H, W) images; holes: (N, H, W) {0,1}.
    """
    if x.ndim != 4 or x.shape[1] != 1 or holes.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"x must be (N, 1, H, W) and holes (N, H, W); got {tuple(x.shape)} and {tuple(holes.shape)}")
    keep = 1.0 - holes[:, None].to(x.dtype)
    num = F.avg_pool2d(x * keep, cell, ceil_mode=True)
    den = F.avg_pool2d(keep, cell, ceil_mode=True)
    # Spread each cell's sums to its neighbours so a cell that is entirely hole still has support.
    num = F.avg_pool2d(num, 3, stride=1, padding=1, count_include_pad=False)
    den = F.avg_pool2d(den, 3, stride=1, padding=1, count_include_pad=False)
    local = F.interpolate(num / den.clamp_min(1e-6), size=x.shape[2:], mode="bilinear", align_corners=False)
    return torch.where(keep > 0, x, local)
