"""Decode a split once into fixed-size arrays held in memory.

The data sets this tool trains on by default fit in RAM many times over at model resolution, and
decoding PNGs once instead of every epoch is the largest saving on a 2-core machine. Sets that do
not fit are decoded once into a memory-mapped cache on disk instead (:mod:`lungaudit.data.cache`),
whose :class:`~lungaudit.data.lazy.RowView` arrays the helpers here accept as well.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from lungaudit.data.lazy import RowView, zip_rows
from lungaudit.data.records import Sample

log = logging.getLogger(__name__)


@dataclass
class Arrays:
    """``images`` (N, S, S) float32 in [0, 1]; ``masks`` (N, S, S) uint8 {0,1}; ``has_mask`` (N,) bool.

    ``images`` and ``masks`` are numpy arrays in memory, or read-only :class:`RowView` s of the disk
    cache folder ``store``.
    """

    samples: list[Sample]
    images: np.ndarray | RowView
    masks: np.ndarray | RowView
    has_mask: np.ndarray
    store: Path | None = None


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    interp = cv2.INTER_AREA if min(image.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)


def load_arrays(
    samples: Sequence[Sample], size: int, progress: Callable[[int, int], None] | None = None, max_pixels: int | None = None
) -> Arrays:
    """Decode and resize ``samples``; a sample whose mask cannot be read keeps ``has_mask=False``.

    Raises ``ImageReadError`` (the file named) for an image that cannot be decoded: samples reach here
    after ``load_dataset`` validated them, so that means the file changed since.
    """
    from lungaudit.data.imageio import ImageReadError, read_image, read_mask

    n = len(samples)
    images = np.zeros((n, size, size), np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    has_mask = np.zeros(n, bool)
    for i, s in enumerate(samples):
        try:
            img = read_image(s.path, max_pixels)
        except ImageReadError as e:
            raise ImageReadError(f"{s.path}: {e.reason}") from None
        images[i] = resize_image(img, size)
        if s.mask_path is not None:
            try:
                masks[i] = resize_mask(read_mask(s.mask_path, img.shape[:2], max_pixels), size)
                has_mask[i] = True
            except ImageReadError as e:
                log.warning("mask %s unusable (%s); it will be predicted", s.mask_path, e)
        if progress is not None:
            progress(i + 1, n)
    return Arrays(list(samples), images, masks, has_mask)


def dilate(masks: np.ndarray, px: int) -> np.ndarray:
    """Dilate (N, H, W) or (H, W) {0,1} masks by a (2px+1)-square, exactly as the audit's max-pool does.

    The audit rebuilds the lung-masked input on the device with ``audit.metrics.dilate_masks``; the
    same square kernel here means the model is audited on the very masking it was trained with.
    """
    if px <= 0:
        return masks
    if isinstance(masks, RowView):  # dilated as rows are read, never all at once
        return masks.map(partial(dilate, px=px))
    kernel = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    if masks.ndim == 2:
        return cv2.dilate(masks.astype(np.uint8), kernel)
    return np.stack([cv2.dilate(m.astype(np.uint8), kernel) for m in masks])


def apply_lung_mask(image: np.ndarray, mask: np.ndarray, fill_value: float) -> np.ndarray:
    """Pixels outside ``mask`` (already dilated) set to ``fill_value``; shapes broadcast."""
    if isinstance(image, RowView) or isinstance(mask, RowView):
        return zip_rows(image, mask, partial(apply_lung_mask, fill_value=fill_value), np.float32)
    return np.where(mask.astype(bool), image, np.float32(fill_value)).astype(np.float32)
