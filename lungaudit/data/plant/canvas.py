"""One radiograph being stamped: where a cue may go, and how its pixels are burned in.

The lung mask, dilated by a margin, is *forbidden*: no cue pixel may land there (the generator's
promise is that shortcuts live outside the lungs). Bright compact structures already in the film
(real "L"/"R" markers, hospital text) are *avoided* when another spot fits, so a planted token does
not sit on a real one. Positions are tested in O(1) with integral images.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1, half-open
CORNERS: tuple[str, ...] = ("TL", "TR", "BL", "BR")
EDGES: tuple[str, ...] = ("left", "right", "top", "bottom")
MIN_CONTRAST = 80.0  # grey levels between a cue's target tone and what it is burned onto


@dataclass(frozen=True)
class Stamp:
    """A cue before placement: ink and optional plate alphas (float32, same ``(h, w)``) and its tones.

    ``ink_tone`` / ``plate_tone``: ``"auto"`` (contrasting with what lies beneath), ``"dark"`` or
    ``"bright"`` (a preference, dropped when it would leave less than ``MIN_CONTRAST``).
    ``opacity`` < 1 lets the anatomy show faintly through, as with a thin lead marker.
    """

    ink: np.ndarray
    plate: np.ndarray | None = None
    ink_tone: str = "auto"
    plate_tone: str = "dark"
    opacity: float = 1.0
    style: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.ink.shape[0]), int(self.ink.shape[1])


def _integral(mask: np.ndarray) -> np.ndarray:
    return cv2.integral(mask.astype(np.uint8), sdepth=cv2.CV_32S)


def _bright_marks(image: np.ndarray, forbidden: np.ndarray, side: int) -> np.ndarray:
    """Where real markers probably are: compact bright islands (top-hat strokes) outside the lungs.

    Long components (clavicle and shoulder edges, the rim of a padding band) are not markers and are
    dropped, or they would leave no corner free.
    """
    k = max(5, (side // 10) | 1)
    tophat = cv2.morphologyEx(image, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    strokes = ((tophat >= 80) & ~forbidden).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(strokes, connectivity=8)
    w, h, area = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT], stats[1:, cv2.CC_STAT_AREA]
    compact = (h <= 0.1 * side) & (w <= 0.15 * side) & (area >= 4) & (area >= 0.1 * w * h)
    marks = np.isin(labels, 1 + np.flatnonzero(compact))
    grow = max(1, side // 50)
    return cv2.dilate(marks.astype(np.uint8), np.ones((2 * grow + 1,) * 2, np.uint8)).astype(bool)


def _box_sum(table: np.ndarray, y: int, x: int, h: int, w: int) -> int:
    return int(table[y + h, x + w] - table[y, x + w] - table[y + h, x] + table[y, x])


class Canvas:
    """An 8-bit radiograph and its lung mask; answers "may a ``h x w`` cue go at ``(y, x)``?"."""

    def __init__(self, image: np.ndarray, lungs: np.ndarray, margin_frac: float) -> None:
        if image.dtype != np.uint8 or image.ndim != 2 or lungs.shape != image.shape:
            raise ValueError(f"need a uint8 (H, W) image and a same-shape mask; got {image.dtype} {image.shape}, {lungs.shape}")
        self.image = image
        self.height, self.width = image.shape
        self.side = min(self.height, self.width)
        r = max(1, round(margin_frac * self.side))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        self.forbidden = cv2.dilate(lungs.astype(np.uint8), kernel).astype(bool)
        self._forbidden_sum = _integral(self.forbidden)
        self._avoid_sum = _integral(_bright_marks(image, self.forbidden, self.side))

    def fits(self, y: int, x: int, h: int, w: int) -> bool:
        """The rectangle lies inside the image and off the forbidden (dilated) lungs."""
        if y < 0 or x < 0 or y + h > self.height or x + w > self.width or h <= 0 or w <= 0:
            return False
        return _box_sum(self._forbidden_sum, y, x, h, w) == 0

    def marks_under(self, y: int, x: int, h: int, w: int) -> int:
        """How many pixels of probable real markers the rectangle would cover."""
        return _box_sum(self._avoid_sum, y, x, h, w)

    def corner_spot(self, rng: np.random.Generator, corner: str, h: int, w: int, tries: int = 24) -> tuple[int, int] | None:
        """A free top-left ``(y, x)`` for a ``h x w`` cue a little inside ``corner``, or None.

        Offsets from the two edges are drawn in [1%, 8%] of the side; a spot clear of real marks wins
        over one that is merely off the lungs, and for that the cue may slide up to 25% along its
        longer side's edge. Among spots that all cover marks, the one covering fewest wins.
        """
        lo = max(1, round(0.01 * self.side))
        hi, far = max(lo + 1, round(0.08 * self.side)), max(lo + 2, round(0.25 * self.side))
        near = rng.integers(lo, hi, size=(tries, 2))
        slide = near.copy()
        slide[:, 1 if w >= h else 0] = rng.integers(lo, far, size=tries)
        best: tuple[int, int] | None = None
        best_cover = -1
        for dy, dx in np.concatenate([near, slide]).tolist():
            y = dy if corner in ("TL", "TR") else self.height - dy - h
            x = dx if corner in ("TL", "BL") else self.width - dx - w
            if not self.fits(y, x, h, w):
                continue
            cover = self.marks_under(y, x, h, w)
            if cover == 0:
                return y, x
            if best is None or cover < best_cover:
                best, best_cover = (y, x), cover
        return best

    def edge_depth(self, edge: str) -> int:
        """How deep a band spanning the whole ``edge`` may reach before it touches the forbidden lungs."""
        f = self.forbidden
        along = f.any(0) if edge in ("left", "right") else f.any(1)
        if not along.any():
            return len(along)
        idx = np.flatnonzero(along)
        return int(idx[0]) if edge in ("left", "top") else int(len(along) - 1 - idx[-1])


def _target(preference: str, under: float) -> float:
    """0 or 255: the preferred extreme when it contrasts enough with ``under``, else the other one."""
    want = {"dark": 0.0, "bright": 255.0}.get(preference, 255.0 if under < 128 else 0.0)
    return want if abs(want - under) >= MIN_CONTRAST else 255.0 - want


def burn(canvas: Canvas, stamp: Stamp, y: int, x: int, rng: np.random.Generator) -> tuple[np.ndarray, Box | None]:
    """A copy of the image with ``stamp`` burned in at ``(y, x)``, and the box of the changed pixels.

    Tones are drawn here, after placement, because a stamp must contrast with what lies under it:
    bright text on a dark plate or on dark background, dark text on a bright plate or abdomen.
    """
    h, w = stamp.shape
    region = canvas.image[y : y + h, x : x + w].astype(np.float32)
    ink, op = stamp.ink, float(stamp.opacity)
    if stamp.plate is not None:
        plate_value = float(rng.uniform(0, 35) if stamp.plate_tone == "dark" else rng.uniform(210, 250))
        region = region * (1 - stamp.plate * op) + plate_value * stamp.plate * op
        under = plate_value
    else:
        under = float(np.median(region[ink > 0.5])) if (ink > 0.5).any() else float(region.mean())
    contrast = float(rng.uniform(0.7, 1.0))
    ink_value = under + contrast * (_target(stamp.ink_tone, under) - under)
    region = region * (1 - ink * op) + ink_value * ink * op
    out = canvas.image.copy()
    out[y : y + h, x : x + w] = np.clip(np.round(region), 0, 255).astype(np.uint8)
    changed = out[y : y + h, x : x + w] != canvas.image[y : y + h, x : x + w]
    rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
    if len(rows) == 0:
        return out, None
    return out, (x + int(cols[0]), y + int(rows[0]), x + int(cols[-1]) + 1, y + int(rows[-1]) + 1)


__all__ = ["CORNERS", "EDGES", "Box", "Canvas", "Stamp", "burn"]
