"""OpenCV clean-up of predicted lung masks: two largest components, holes filled."""

from __future__ import annotations

import cv2
import numpy as np


def keep_largest_components(mask: np.ndarray, k: int = 2, min_frac: float = 0.1) -> np.ndarray:
    """Keep the ``k`` largest 8-connected components of a bool (H, W) mask.

    Components smaller than ``min_frac`` of the largest are dropped too, so a single-lung image
    does not keep a speck as its "second lung".
    """
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask.astype(bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(areas)[::-1][:k]
    keep = [i + 1 for i in order if areas[i] >= min_frac * areas[order[0]]]
    return np.isin(labels, keep)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions not connected to the image border."""
    m = mask.astype(np.uint8)
    h, w = m.shape
    flood = np.pad(m, 1, constant_values=0) * 255
    ff_mask = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(flood, ff_mask, (0, 0), 255)
    holes = flood[1:-1, 1:-1] == 0
    return mask.astype(bool) | holes


def postprocess_mask(mask: np.ndarray) -> np.ndarray:
    """Two largest components, then holes filled. (H, W) bool -> (H, W) bool."""
    return fill_holes(keep_largest_components(mask))
