"""Named regions outside the lungs, derived per image from the lung mask (batched, on the device).

A flag names the region holding most of the out-of-lung heatmap energy, so a reviewer reads
"border" (burned-in text), "above" (shoulders, neck), "below" (abdomen), "lateral" (arms, soft
tissue) or "mediastinum" (between the lungs: heart, spine) instead of a number.

Geometry, per image, with t/b the lungs' top/bottom rows, l/r their leftmost/rightmost columns and
a midline column m splitting the two lungs (centre of the emptiest columns in the middle half of
[l, r], i.e. the gap between the lungs when there is one):

1. lung pixels belong to no region;
2. ``border``: a band ``border_frac * side`` wide along all four edges (markers sit there), except
   within half a band's width of a lung: heat there is the lung's neighbourhood (diaphragm, apex,
   chest wall) and takes the name of its side from the rules below (before, heat just under a lung
   near the bottom edge was called "border"). ``border`` takes precedence over the rules below;
3. ``above``: rows above t; ``below``: rows below b;
4. ``lateral``: columns left of l or right of r (rows t..b);
5. inside the lungs' bounding box, on the side of m the pixel is on: above / below *that* lung's
   own top / bottom -> ``above`` / ``below`` (the neck between unequal apices, the abdomen under the
   higher hemidiaphragm); otherwise, toward the midline from that lung's innermost pixel in the row
   -> ``mediastinum``, else (its outer side, or a hole in the mask) -> ``lateral``.

An empty mask has no lungs to be relative to: everything but the border is ``mediastinum`` (the
"centre"); callers usually report such images as having no mask anyway.
The regions are disjoint and, with the lung mask, cover the image.
"""

from __future__ import annotations

import torch

from lungaudit.audit.lungs import _first_last, split_lungs
from lungaudit.audit.metrics import _check_maps, dilate_masks, tolerant_lungs

REGION_NAMES: tuple[str, ...] = ("border", "above", "below", "lateral", "mediastinum")
BORDER, ABOVE, BELOW, LATERAL, MEDIASTINUM = range(5)


def region_labels(masks: torch.Tensor, border_frac: float) -> torch.Tensor:
    """(N, H, W) binary lung masks -> (N, H, W) int64 label map: -1 lung, else an index into REGION_NAMES."""
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {tuple(masks.shape)}")
    if masks.dtype != torch.bool and bool(((masks != 0) & (masks != 1)).any()):
        raise ValueError("masks must be binary (bool or 0/1)")
    if not 0.0 <= border_frac < 0.5:
        raise ValueError(f"border_frac must lie in [0, 0.5), got {border_frac}")
    M = masks.bool()
    n, h, w = M.shape
    dev = M.device
    ys = torch.arange(h, device=dev).view(1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, w)

    bh, bw = round(border_frac * h), round(border_frac * w)
    band = (ys < bh) | (ys >= h - bh) | (xs < bw) | (xs >= w - bw)
    # The band is "border" only away from the lungs (module docstring, rule 2).
    near = max(bh, bw) // 2
    near_lungs = dilate_masks(M, near) > 0 if near > 0 else M
    border = band & ~near_lungs

    rows_any, cols_any = M.any(2), M.any(1)  # (N, H), (N, W)
    top, bottom = _first_last(rows_any, h)
    left, right = _first_last(cols_any, w)
    empty = ~rows_any.any(1)
    ML, MR, on_left = split_lungs(M)
    top_l, bot_l = _first_last(ML.any(2), h)
    top_r, bot_r = _first_last(MR.any(2), h)
    # A missing lung on one side: use the joint extent there, so step 5 does not call it all "above".
    top_l = torch.where(ML.any((1, 2)), top_l, top)
    bot_l = torch.where(ML.any((1, 2)), bot_l, bottom)
    top_r = torch.where(MR.any((1, 2)), top_r, top)
    bot_r = torch.where(MR.any((1, 2)), bot_r, bottom)
    side_top = torch.where(on_left, top_l.view(n, 1, 1), top_r.view(n, 1, 1))
    side_bot = torch.where(on_left, bot_l.view(n, 1, 1), bot_r.view(n, 1, 1))

    xi = xs.expand(n, h, w)
    inner_l = torch.where(ML, xi, -1).amax(2, keepdim=True)  # (N, H, 1) rightmost left-lung pixel per row
    inner_r = torch.where(MR, xi, w).amin(2, keepdim=True)  # (N, H, 1) leftmost right-lung pixel per row
    toward_mid = torch.where(on_left, xs > inner_l, xs < inner_r)

    t, b = top.view(n, 1, 1), bottom.view(n, 1, 1)
    l, r = left.view(n, 1, 1), right.view(n, 1, 1)
    label = torch.where(toward_mid, MEDIASTINUM, LATERAL)
    label = torch.where(ys > side_bot, BELOW, label)
    label = torch.where(ys < side_top, ABOVE, label)
    label = torch.where((xs < l) | (xs > r), LATERAL, label)
    label = torch.where(ys > b, BELOW, label)
    label = torch.where(ys < t, ABOVE, label)
    label = torch.where(empty.view(n, 1, 1), MEDIASTINUM, label)
    label = torch.where(border, BORDER, label)
    return torch.where(M, -1, label).long()


def region_maps(masks: torch.Tensor, border_frac: float) -> torch.Tensor:
    """(N, H, W) binary lung masks -> (N, R, H, W) bool region maps, R = len(REGION_NAMES).

    Disjoint; their union with the lung mask is the whole image (see the module docstring).
    """
    labels = region_labels(masks, border_frac)
    r = torch.arange(len(REGION_NAMES), device=labels.device).view(1, -1, 1, 1)
    return labels[:, None] == r


def dominant_region(
    cams: torch.Tensor, masks: torch.Tensor, border_frac: float, tolerance_px: int = 0, *, fill: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which region holds most of the heatmap energy outside the (tolerant) lungs.

    Args:
        cams: (N, H, W) non-negative heatmaps; masks: (N, H, W) binary lung masks.
        border_frac: border band width as a fraction of the side.
        tolerance_px: the lungs are dilated by this radius first, as in the tolerant E_in, so the
            coarse CAM's spill-over just past the lung edge is not blamed on a neighbouring region.
        fill: fill each lung's holes and bites before dilating, as the tolerant E_in does.

    Returns:
        ``index`` (N,) int64 into REGION_NAMES, -1 where there is no energy outside the tolerant
        lungs (callers must not index REGION_NAMES with it then); ``share`` (N, R) float, each
        region's fraction of the outside energy (rows sum to 1; NaN where index is -1).
    """
    _check_maps(cams, masks)
    regions = region_maps(masks, border_frac).float()  # geometry from the exact mask
    outside = cams.float() * (1.0 - tolerant_lungs(masks, tolerance_px, fill))
    energy = torch.einsum("nhw,nrhw->nr", outside, regions)
    total = energy.sum(1, keepdim=True)
    none = total[:, 0] <= 0
    share = torch.where(none[:, None], torch.full_like(energy, float("nan")), energy / total.clamp_min(1e-30))
    index = torch.where(none, -1, energy.argmax(1))
    return index, share


__all__ = ["REGION_NAMES", "dominant_region", "region_labels", "region_maps"]
