"""Probable burned-in markers (laterality tokens, hospital text) and whether a CAM hotspot sits on one.

A marker is a bright, compact, high-contrast connected component outside the lungs. This runs per
image on CPU numpy with OpenCV, in the audit's decode workers, not in the CAM hot path.

Its cost grows with the cube of the side at full resolution (a top-hat whose kernel is a tenth of the
side), so :func:`markers_at_working_resolution` first shrinks an image to at most ``max_side``
pixels: a hospital's 3000 px radiograph costs what a 512 px one does. Burned-in text stays legible at
512 px (a 3000 px film's 60 px letters become 10 px).

Pipeline per image: white top-hat (bright structures narrower than the kernel: text strokes, not
the body or the shoulders) -> threshold on contrast -> a small closing that joins the letters of
one token ("PORT") -> ``cv2.connectedComponentsWithStats`` -> filters on size, fill ratio, local
contrast and overlap with the (dilated) lungs.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), half-open: the box covers x0 <= x < x1, y0 <= y < y1


def _as_numpy(a: np.ndarray | torch.Tensor) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _boxes_one(
    img: np.ndarray,
    lungs: np.ndarray,
    min_contrast: float,
    min_area_frac: float,
    max_height_frac: float,
    max_width_frac: float,
    min_fill: float,
    max_lung_overlap: float,
) -> list[Box]:
    h, w = img.shape
    side = min(h, w)
    u8 = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    # The kernel must be wider than a stroke but narrower than anatomy; ~1/10 of the side does both
    # at the audit resolutions (128-512 px).
    k = max(5, (side // 10) | 1)
    tophat = cv2.morphologyEx(u8, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    bright = (tophat >= min_contrast * 255).astype(np.uint8)
    bright[lungs] = 0  # lung texture (opacities, ribs over the lungs) is never a marker
    if not bright.any():
        return []
    j = max(3, (side // 40) | 1)
    joined = cv2.morphologyEx(bright, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (j, j)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    if n <= 1:
        return []
    x, y, bw, bh, area = (stats[1:, i] for i in range(5))
    # Per-component counts of stroke pixels and lung pixels, in one bincount each (no per-label masks).
    lab = labels.ravel()
    strokes = np.bincount(lab, weights=bright.ravel(), minlength=n)[1:]
    in_lung = np.bincount(lab, weights=lungs.ravel().astype(np.float64), minlength=n)[1:]
    fill = strokes / np.maximum(bw * bh, 1)
    keep = (
        (strokes >= max(4, min_area_frac * h * w))
        & (bh <= max_height_frac * h)
        & (bh >= max(3, round(0.015 * h)))  # glyph height; rejects bright edge lines of padding
        & (bw >= 2)
        & (bw <= max_width_frac * w)
        & (fill >= min_fill)
        & (in_lung <= max_lung_overlap * area)
    )
    boxes: list[Box] = []
    for i in np.flatnonzero(keep):
        x0, y0, x1, y1 = int(x[i]), int(y[i]), int(x[i] + bw[i]), int(y[i] + bh[i])
        # Local contrast: stroke brightness against a ring around the box. The ring's 90th percentile,
        # not its median: a marker is an island, dark all around, while the tip of a shoulder or a
        # clavicle continues into bright anatomy on one side.
        p = max(2, j)
        rx0, ry0, rx1, ry1 = max(0, x0 - p), max(0, y0 - p), min(w, x1 + p), min(h, y1 + p)
        patch, strokes_mask = img[ry0:ry1, rx0:rx1], bright[ry0:ry1, rx0:rx1].astype(bool)
        ring = ~strokes_mask  # neighbouring letters of the same token are strokes, not background
        ring[y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0] = False
        bg = patch[ring] if ring.any() else patch[~strokes_mask]
        if bg.size == 0 or float(np.percentile(patch[strokes_mask], 90) - np.percentile(bg, 90)) < min_contrast:
            continue
        boxes.append((x0, y0, x1, y1))
    return boxes


def find_marker_boxes(
    images: np.ndarray | torch.Tensor,
    masks: np.ndarray | torch.Tensor,
    *,
    min_contrast: float = 0.2,
    min_area_frac: float = 0.0002,
    max_height_frac: float = 0.2,
    max_width_frac: float = 0.6,
    min_fill: float = 0.12,
    max_lung_overlap: float = 0.1,
    lung_margin_px: int = 2,
) -> list[list[Box]]:
    """Boxes of probable burned-in markers per image.

    Args:
        images: (N, H, W) float in [0, 1] (numpy or torch; moved to CPU numpy).
        masks: (N, H, W) binary lung masks at the same resolution.
        min_contrast: minimum brightness of the strokes above the surrounding background (and
            minimum top-hat response), in image units.
        min_area_frac: minimum number of stroke pixels, as a fraction of the image area.
        max_height_frac, max_width_frac: a marker's box is at most this fraction of the image height
            and width (burned-in text runs horizontally: short and possibly wide).
        min_fill: minimum stroke-pixel fraction of the box (rejects long thin rib/edge arcs).
        max_lung_overlap: maximum fraction of the component inside the lungs.
        lung_margin_px: the lungs are dilated by this much before the overlap test.

    Returns:
        one list per image of ``(x0, y0, x1, y1)`` half-open pixel boxes.
    """
    imgs = _as_numpy(images).astype(np.float32, copy=False)
    ms = _as_numpy(masks)
    if imgs.ndim != 3 or ms.shape != imgs.shape:
        raise ValueError(f"images {imgs.shape} and masks {ms.shape} must both be (N, H, W)")
    if imgs.size and (not np.isfinite(imgs).all() or imgs.min() < -1e-6 or imgs.max() > 1 + 1e-6):
        raise ValueError("images must be finite floats in [0, 1]")
    lungs = ms.astype(bool)
    if lung_margin_px > 0:
        kernel = np.ones((2 * lung_margin_px + 1,) * 2, np.uint8)
        lungs = np.stack([cv2.dilate(m.astype(np.uint8), kernel).astype(bool) for m in lungs]) if len(lungs) else lungs
    return [
        _boxes_one(img, lung, min_contrast, min_area_frac, max_height_frac, max_width_frac, min_fill, max_lung_overlap)
        for img, lung in zip(imgs, lungs)
    ]


def _shrink(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """``image`` box-filtered (INTER_AREA) to ``size`` (w, h), and the (h, w) of the part it covers.

    A film more than twice the size is first reduced by a whole factor k, after cropping the last
    < k rows and columns: OpenCV's integer-ratio area filter is about 4x faster than its general one
    (5 ms instead of 23 ms from 3000 to 512 px), and two box filters approximate one. This keeps the
    marker search's cost nearly independent of the film's size.
    """
    h, w = image.shape
    k = min(w // size[0], h // size[1])
    if k < 2:
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA), (h, w)
    h, w = h // k * k, w // k * k
    step = cv2.resize(image[:h, :w], (w // k, h // k), interpolation=cv2.INTER_AREA)
    return cv2.resize(step, size, interpolation=cv2.INTER_AREA), (h, w)


def markers_at_working_resolution(
    image: np.ndarray, lungs: np.ndarray | None, max_side: int, out_hw: tuple[int, int]
) -> list[Box]:
    """Marker boxes of one (H, W) image found at a side of at most ``max_side``, scaled to ``out_hw``.

    Args:
        image: (H, W) float in [0, 1] at full resolution.
        lungs: (H, W) bool lung mask, or None when no mask is known yet.
        max_side: longest side the search runs at (images already smaller are not enlarged).
        out_hw: (height, width) the returned boxes refer to, e.g. the classifier's input size.
    """
    h, w = image.shape
    scale = min(1.0, max_side / max(h, w))
    covered_h, covered_w = h, w  # the part of the image the searched picture shows
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image, (covered_h, covered_w) = _shrink(image, size)
        if lungs is not None:  # a view, not a uint8 copy of a 9-megapixel mask
            lungs = cv2.resize(lungs[:covered_h, :covered_w].view(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    if lungs is None:
        lungs = np.zeros(image.shape, bool)
    found = find_marker_boxes(image[None], lungs[None])[0]
    sy, sx = out_hw[0] / h * covered_h / image.shape[0], out_hw[1] / w * covered_w / image.shape[1]
    return [(int(x0 * sx), int(y0 * sy), int(np.ceil(x1 * sx)), int(np.ceil(y1 * sy))) for x0, y0, x1, y1 in found]


def hotspot_overlaps_marker(
    cam: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor | None,
    boxes: Sequence[Box],
    *,
    pad_px: int = 4,
    top_frac: float = 0.02,
) -> bool:
    """Whether the CAM's hottest out-of-lung spot falls in or near a marker box.

    Args:
        cam: (H, W) non-negative heatmap at the image resolution of ``boxes``.
        mask: (H, W) binary lung mask, or None to consider the whole image.
        boxes: ``(x0, y0, x1, y1)`` half-open boxes from :func:`find_marker_boxes`.
        pad_px: boxes are grown by this much, since CAMs are coarse (a 128 px image has 8x8 cells).
        top_frac: the hotspot is the hottest ``top_frac`` of out-of-lung pixels (at least one); a
            flat-topped upsampled CAM has no single argmax, so the test is whether at least half of
            the hotspot's energy lies in the padded boxes, or its single hottest pixel does.

    Returns:
        False when there are no boxes or no out-of-lung energy.
    """
    c = _as_numpy(cam).astype(np.float64, copy=False)
    if c.ndim != 2:
        raise ValueError(f"cam must be (H, W), got shape {c.shape}")
    if mask is not None:
        m = _as_numpy(mask)
        if m.shape != c.shape:
            raise ValueError(f"mask {m.shape} must match cam {c.shape}")
        c = np.where(m.astype(bool), 0.0, c)
    if not boxes or not (c > 0).any():
        return False
    h, w = c.shape
    near = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in boxes:
        near[max(0, y0 - pad_px) : min(h, y1 + pad_px), max(0, x0 - pad_px) : min(w, x1 + pad_px)] = True
    flat = c.ravel()
    if near.ravel()[int(flat.argmax())]:
        return True
    k = max(1, int(round(top_frac * flat.size)))
    hot = np.argpartition(flat, -k)[-k:]
    hot = hot[flat[hot] > 0]
    e = flat[hot]
    return bool(e[near.ravel()[hot]].sum() >= 0.5 * e.sum())


__all__ = ["Box", "find_marker_boxes", "hotspot_overlaps_marker", "markers_at_working_resolution"]
