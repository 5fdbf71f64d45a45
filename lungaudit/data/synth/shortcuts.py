"""Step 4: the planted shortcuts outside the lungs - burned-in text stamps (with an optional dark
plate) in class-owned corners, and a class-level brightness offset on the shoulders.

Both take a ``forbidden`` bool mask (the lungs plus a guard ring) and never change a pixel on it.
"""

from __future__ import annotations

import cv2
import numpy as np

from lungaudit.data.synth.anatomy import Geometry
from lungaudit.data.synth.raster import bbox, unit_grid

CORNER_NAMES: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right")
MARKER_TOKENS: tuple[str, ...] = ("L", "R", "PORT", "AP", "SUP", "CXR", "ER", "ICU")
# marker_vocab="corner": the words each corner (TL, TR, BL, BR) draws from
CORNER_TOKENS: tuple[tuple[str, ...], ...] = (("PORT", "L"), ("AP", "R"), ("SUP", "ER"), ("CXR", "ICU"))
MARKER_VOCABS: tuple[str, ...] = ("corner", "shared")
SHOULDER_LEVELS: tuple[float, ...] = (0.16, 0.06, -0.06, -0.16)  # additive brightness, per class
PLATE_LEVEL = 25  # grey level of the dark box behind a plated stamp

Box = tuple[int, int, int, int]


def pick_token(rng: np.random.Generator, corner: int, vocab: str) -> str:
    """The stamp's word: from the corner's own words (``corner``) or from all of them (``shared``)."""
    words = CORNER_TOKENS[corner] if vocab == "corner" else MARKER_TOKENS
    return words[int(rng.integers(len(words)))]


def _marker_layer(
    rng: np.random.Generator, size: int, corner: int, forbidden: np.ndarray, vocab: str
) -> tuple[np.ndarray, Box | None]:
    """uint8 ``(size, size)`` layer holding a text token in ``corner`` (0 TL, 1 TR, 2 BL, 3 BR),
    cleared on ``forbidden`` pixels; returns the layer and the half-open box of its nonzero pixels."""
    s = size
    token = pick_token(rng, corner, vocab)
    font = cv2.FONT_HERSHEY_SIMPLEX
    thick = max(1, round(s / 128))
    target_h = max(7.0, 0.055 * s)
    (_, h1), _ = cv2.getTextSize("L", font, 1.0, thick)
    scale = target_h / h1
    (tw, th), base = cv2.getTextSize(token, font, scale, thick)
    max_w = int(0.24 * s)
    if tw > max_w:  # keep the token inside the corner band at any image size
        scale *= max_w / tw
        (tw, th), base = cv2.getTextSize(token, font, scale, thick)
    margin = max(2, round(0.025 * s))
    x = margin if corner in (0, 2) else s - margin - tw
    y = margin + th if corner in (0, 1) else s - margin - base
    layer = np.zeros((s, s), np.uint8)
    # anti-aliasing would leave a faint token at small sizes; burned-in text is crisp anyway
    cv2.putText(layer, token, (int(x), int(y)), font, scale, 255, thick, cv2.LINE_AA if s >= 192 else cv2.LINE_8)
    layer[forbidden] = 0
    return layer, bbox(layer > 0)


def plant_marker(
    rng: np.random.Generator, image: np.ndarray, corner: int, forbidden: np.ndarray, vocab: str, plate: bool
) -> tuple[np.ndarray, Box | None]:
    """Burn a stamp into uint8 ``image`` ``(s, s)`` in ``corner``; returns the new image and the box
    of every changed pixel (the plate's when ``plate``), None if the stamp fell wholly on the lungs."""
    s = image.shape[0]
    layer, box = _marker_layer(rng, s, corner, forbidden, vocab)
    intensity = rng.uniform(0.85, 1.0)
    if plate and box is not None:
        pad = max(1, round(0.012 * s))
        backing = np.zeros((s, s), bool)
        backing[max(0, box[1] - pad) : box[3] + pad, max(0, box[0] - pad) : box[2] + pad] = True
        backing &= ~forbidden
        image = np.where(backing, np.minimum(image, PLATE_LEVEL), image)
        box = bbox(backing)
    return np.maximum(image, np.round(layer * intensity).astype(np.uint8)), box


def plant_shoulders(
    image: np.ndarray, geo: Geometry, forbidden: np.ndarray, shoulder_class: int
) -> tuple[np.ndarray, Box | None, float]:
    """Shift the shoulders above the lungs of uint8 ``image`` ``(s, s)`` by the class's level;
    returns the new image, the box of the changed pixels and the level."""
    s = image.shape[0]
    level = SHOULDER_LEVELS[shoulder_class]
    xx, yy = unit_grid(s)
    y_end = min(geo.apex_y - 0.02, geo.shoulder_y + 0.16)
    region = geo.body_mask & (np.abs(xx - 0.5) > 0.16) & (yy < y_end) & ~forbidden
    weight = np.where(region, 1.0, 0.0).astype(np.float32)
    shifted = np.clip(image.astype(np.float32) + 255 * level * weight, 0, 255).astype(np.uint8)
    return shifted, bbox(shifted != image), level
