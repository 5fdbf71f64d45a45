"""The audit's input side: decode each image once in a DataLoader worker, with its mask and markers.

Per image, in the worker: decode (refusing images above the pixel cap before allocating them), read
the given lung mask, search burned-in markers at a bounded working resolution, and resize image and
mask to the classifier's input size. Only fixed-size tensors cross to the main process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset as TorchDataset

from lungaudit.audit.markers import Box, markers_at_working_resolution
from lungaudit.data.imageio import ImageReadError, read_image, read_mask
from lungaudit.data.records import Sample

MAX_BOXES = 8  # marker boxes kept per image; padded with rows of -1 so batches collate


@dataclass(frozen=True)
class DecodeSpec:
    size: int  # classifier input side
    use_given_masks: bool
    marker_side: int  # longest side the marker search runs at
    max_pixels: int | None = None  # decoding refuses larger images (None: the reader's default cap)


class AuditImages(TorchDataset):
    """Items are dicts: ``index``, ``image`` (1, S, S), ``mask`` (1, S, S) {0,1}, ``has_mask``,
    ``boxes`` (MAX_BOXES, 4) int64 at S x S (-1 rows pad), ``error`` ("" or the reason)."""

    def __init__(self, samples: Sequence[Sample], spec: DecodeSpec) -> None:
        self.samples, self.spec = list(samples), spec

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        try:
            image = read_image(s.path, max_pixels=self.spec.max_pixels)
        except ImageReadError as e:
            return {**empty_item(self.spec.size), "index": i, "error": e.reason}
        full_mask = None
        if self.spec.use_given_masks and s.mask_path is not None:
            try:
                full_mask = read_mask(s.mask_path, image.shape[:2], max_pixels=self.spec.max_pixels)
            except ImageReadError:
                full_mask = None  # the U-Net predicts it; load_dataset already reported the mask
        return {**prepare_decoded(image, full_mask, self.spec), "index": i}


def empty_item(size: int) -> dict[str, Any]:
    """A placeholder item (zeros, no mask, no boxes, no error) for an image that could not be decoded."""
    return {
        "image": torch.zeros(1, size, size),
        "mask": torch.zeros(1, size, size),
        "has_mask": False,
        "boxes": torch.full((MAX_BOXES, 4), -1, dtype=torch.int64),
        "error": "",
    }


def prepare_decoded(image: np.ndarray, full_mask: np.ndarray | None, spec: DecodeSpec) -> dict[str, Any]:
    """One decoded image as the audit step reads it: markers searched, image and mask resized.

    The audit's workers, ``predict`` and ``serve`` all go through here, so an image is prepared the
    same way whichever door it came in by.

    Args:
        image: (H, W) float32 in [0, 1] from :func:`~lungaudit.data.imageio.read_image`.
        full_mask: (H, W) bool lung mask at the image's size, or None (the run's U-Net predicts it).

    Returns:
        an :class:`AuditImages` item without ``index``: ``image`` (1, S, S), ``mask`` (1, S, S),
        ``has_mask``, ``boxes`` (MAX_BOXES, 4) and ``error`` "".
    """
    size = spec.size
    item = empty_item(size)
    boxes = markers_at_working_resolution(image, full_mask, spec.marker_side, (size, size))[:MAX_BOXES]
    if boxes:
        item["boxes"][: len(boxes)] = torch.tensor(boxes)
    item["image"] = torch.from_numpy(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))[None]
    if full_mask is not None:
        small = cv2.resize(full_mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
        item["mask"] = torch.from_numpy(small.astype(np.float32))[None]
        item["has_mask"] = True
    return item


def audit_loader(samples: Sequence[Sample], spec: DecodeSpec, batch_size: int, num_workers: int, pin: bool) -> DataLoader:
    """In-order batches of decoded images (order matters: rows follow the data set)."""
    return DataLoader(
        AuditImages(samples, spec),
        batch_size=batch_size,
        num_workers=num_workers if len(samples) > batch_size else 0,
        pin_memory=pin,
    )


def valid_boxes(rows: torch.Tensor) -> list[list[Box]]:
    """(N, MAX_BOXES, 4) padded boxes -> per image the real ones."""
    return [[tuple(b) for b in r.tolist() if b[0] >= 0 and b[2] > b[0] and b[3] > b[1]] for r in rows]  # type: ignore[misc]
