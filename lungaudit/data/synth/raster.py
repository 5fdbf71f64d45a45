"""Drawing primitives shared by the generator's steps: smooth noise, sub-pixel polygons, boxes."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def unit_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(xx, yy)``, each float32 ``(size, size)`` in ``(0, 1)``."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    xx, yy = np.meshgrid(coords, coords)
    return xx, yy


def smooth_noise(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered white noise (float32, ``size x size``)."""
    n = rng.standard_normal((size, size), dtype=np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigmaX=max(sigma_px, 0.5), borderType=cv2.BORDER_REFLECT)
    s = float(n.std())
    return n / s if s > 0 else n


def poly_px(points: np.ndarray, size: int) -> np.ndarray:
    """Normalised ``(n, 2)`` (x, y) points to int32 ``(n, 1, 2)`` pixel coordinates with 4 fractional
    bits, as OpenCV's ``shift=4`` drawing calls expect."""
    return np.round(points * size * 16).astype(np.int32).reshape(-1, 1, 2)


def fill(size: int, polys: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 ``(size, size)`` canvas with the normalised polygons ``polys`` filled with 1."""
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillPoly(canvas, [poly_px(p, size) for p in polys], 1, lineType=cv2.LINE_8, shift=4)
    return canvas


def bbox(on: np.ndarray) -> tuple[int, int, int, int] | None:
    """Half-open ``(x0, y0, x1, y1)`` box of the True pixels of a 2-D bool array; None when empty."""
    rows, cols = np.nonzero(on.any(axis=1))[0], np.nonzero(on.any(axis=0))[0]
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
