"""Lung-mask geometry shared by the audit metrics and the region names (batched, on the device).

Real segmenters leave dense tissue out of the lung mask: a consolidation at the lung's edge becomes a
bite out of the mask, a nodule a hole in it. The Grad-CAM of a model that reads the disease then
lands "outside the lungs", and the audit would flag the disease itself. :func:`fill_lungs` gives each
lung back what it enclosed: holes, and bites with lung tissue on both sides along a row or a column.
The cardiac notch stays out (no lung below it in its columns, none medial to it in its rows), and so
does everything between the two lungs, because each lung is filled on its own side of the midline.
"""

from __future__ import annotations

import torch


def _first_last(any_: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L) bool -> first and last True index (N,); (size, -1) where none."""
    idx = torch.arange(size, device=any_.device)
    first = torch.where(any_, idx, size).amin(1)
    last = torch.where(any_, idx, -1).amax(1)
    return first, last


def midline(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 1, 1) float column splitting the two lungs.

    The centre of the columns with the fewest lung pixels in the middle half of the lungs' extent,
    i.e. the gap between the lungs when there is one; the centre of the extent otherwise.
    """
    n, _, w = masks.shape
    cols_any = masks.any(1)
    left, right = _first_last(cols_any, w)
    colcount = masks.sum(1).float()
    span = (right - left).clamp_min(0).float()
    lo_c, hi_c = left.float() + span / 4, right.float() - span / 4
    xw = torch.arange(w, device=masks.device).float().view(1, w)
    window = (xw >= lo_c[:, None]) & (xw <= hi_c[:, None])
    vals = torch.where(window, colcount, torch.inf)
    is_min = window & (vals == vals.amin(1, keepdim=True))
    mid = (xw * is_min).sum(1) / is_min.sum(1).clamp_min(1)
    return torch.where(is_min.any(1), mid, (left + right).float() / 2).view(n, 1, 1)


def split_lungs(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, H, W) bool -> (image-left lung, image-right lung, (N, 1, W) bool "left of the midline")."""
    w = masks.shape[2]
    on_left = torch.arange(w, device=masks.device).float().view(1, 1, w) < midline(masks)
    return masks & on_left, masks & ~on_left, on_left


def _between(m: torch.Tensor, dim: int) -> torch.Tensor:
    """Pixels with a True at or before and at or after them along ``dim`` (the span from first to last)."""
    before = m.cumsum(dim) > 0
    after = m.flip(dim).cumsum(dim).flip(dim) > 0
    return before & after


def fill_lungs(masks: torch.Tensor, rounds: int = 2) -> torch.Tensor:
    """(N, H, W) binary lung masks -> (N, H, W) bool with each lung's holes and bites filled.

    Per lung (each side of :func:`midline`): pixels lying between lung pixels along their row or
    along their column are added; ``rounds`` repetitions fill bites that need both directions. The
    result contains the input and stays within each lung's bounding box.
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {tuple(masks.shape)}")
    left, right, _ = split_lungs(masks.bool())
    filled = []
    for lung in (left, right):
        f = lung
        for _ in range(rounds):
            f = f | _between(f, 2) | _between(f, 1)
        filled.append(f)
    return filled[0] | filled[1]


__all__ = ["fill_lungs", "midline", "split_lungs"]
