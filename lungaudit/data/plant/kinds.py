"""The cue kinds: burned-in text, a ruler, a collimation band, a corner patch (one registry).

Each kind gives class ``k`` its own anchor (``anchors[k]``: a corner, or for bands an edge), so the
cue's *position* carries the class, as the phantoms' per-class corners do; text also draws its words
from a per-class vocabulary (as each hospital stamps its own). Everything else (font, size, weight,
plate, tone, contrast, exact offset) varies per image so that no single glyph or grey level is the cue.

A kind's ``make`` returns the stamp and where it goes, or None when nothing fits off the lungs
(it first shrinks the cue, down to half size).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from lungaudit.data.plant.canvas import EDGES, MIN_CONTRAST, Canvas, Stamp
from lungaudit.data.plant.glyphs import available_fonts, render_text

# Real stamps (DeGrave et al. 2021; Zech et al. 2018): laterality, projection and position, portable
# units, hospital and room names. Class k draws from TOKENS[k::n_classes], so every class gets a mix.
TOKENS: tuple[str, ...] = (
    "L", "R", "AP SUPINE", "PA ERECT", "PORTABLE", "UPRIGHT",
    "ST LUKE'S", "MERCY GEN", "RAD 2", "ICU", "CXR-3", "WARD 7",
)  # fmt: skip
SHRINK: tuple[float, ...] = (1.0, 0.8, 0.64, 0.5)
MIN_CAP_PX = 5.0  # smaller capitals render as blobs, or as nothing at all


class Placed(NamedTuple):
    stamp: Stamp
    y: int
    x: int


MakeFn = Callable[[np.random.Generator, Canvas, str, int, int], "Placed | None"]


@dataclass(frozen=True)
class CueKind:
    """``anchors[k]`` is where class ``k``'s cue goes; ``weight`` is the kind's share of images."""

    name: str
    anchors: tuple[str, ...]
    weight: int
    make: MakeFn


def tokens_for(cue_class: int, n_classes: int) -> tuple[str, ...]:
    """The words a cue pointing at ``cue_class`` may say."""
    return TOKENS[cue_class::n_classes]


def _with_plate(ink: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """The ink padded by ``pad`` on every side, and a full plate of the padded size."""
    inked = np.pad(ink, pad)
    return inked, np.ones_like(inked)


def _first_fit(rng: np.random.Generator, canvas: Canvas, corner: str, build: Callable[[float], Stamp]) -> Placed | None:
    """Place ``build(scale)`` near ``corner``, shrinking until it fits off the lungs."""
    for scale in SHRINK:
        stamp = build(scale)
        spot = canvas.corner_spot(rng, corner, *stamp.shape)
        if spot is not None:
            return Placed(stamp, *spot)
    return None


def _under_ink(canvas: Canvas, placed: Placed) -> float:
    """Median grey level of the film under a placed stamp's strokes."""
    h, w = placed.stamp.shape
    region = canvas.image[placed.y : placed.y + h, placed.x : placed.x + w]
    strokes = placed.stamp.ink > 0.5
    return float(np.median(region[strokes])) if strokes.any() else float(region.mean())


def _legible_fit(
    rng: np.random.Generator, canvas: Canvas, corner: str, build: Callable[[float, str | None], Stamp], plate: str | None
) -> Placed | None:
    """Place a white stamp; where white would not show (bright abdomen, soft tissue), put it on a dark plate.

    Burned-in text and lead rulers show white; consoles put text on a dark box where the film is
    bright, rather than printing it dark. Falls back to the bare stamp (drawn dark) if no plate fits.
    """
    placed = _first_fit(rng, canvas, corner, lambda scale: build(scale, plate))
    if placed is None or plate is not None or _under_ink(canvas, placed) < 255 - MIN_CONTRAST:
        return placed
    return _first_fit(rng, canvas, corner, lambda scale: build(scale, "dark")) or placed


def make_text(rng: np.random.Generator, canvas: Canvas, corner: str, cue_class: int, n_classes: int) -> Placed | None:
    """A burned-in word or laterality letter, bare or on a plate, in one of several faces."""
    words = tokens_for(cue_class, n_classes)
    token = words[int(rng.integers(len(words)))]
    fonts = available_fonts()
    font = fonts[int(rng.integers(len(fonts)))]
    # Sizes and strokes of real stamps (a 512 px Shenzhen "L" is ~25 px tall, ~4 px strokes): still a
    # shape, not a smudge, once the film is shrunk to a 128 px model input.
    cap = canvas.side * float(rng.uniform(0.05, 0.09) if len(token) <= 2 else rng.uniform(0.03, 0.055))
    weight = float(rng.uniform(0.1, 0.18))
    plated = bool(rng.random() < 0.4)
    plate_tone = "dark" if rng.random() < 0.7 else "bright"
    pad_frac = float(rng.uniform(0.2, 0.45))
    opacity = float(rng.uniform(0.85, 1.0))

    def build(scale: float, plate: str | None) -> Stamp:
        """The stamp at ``scale`` of its drawn size (the style is drawn once, before any shrinking)."""
        c = max(MIN_CAP_PX, cap * scale)
        ink = render_text(token, font, c, weight)
        if ink.shape[1] > 0.38 * canvas.width and c > MIN_CAP_PX:  # a long word on a narrow film
            c = max(MIN_CAP_PX, c * 0.38 * canvas.width / ink.shape[1])
            ink = render_text(token, font, c, weight)
        style = f"text '{token}' {font.name} cap {c:.0f}px"
        if plate is None:
            return Stamp(ink, None, "bright", "dark", opacity, style + " bare")
        ink, backing = _with_plate(ink, max(1, round(c * pad_frac)))
        return Stamp(ink, backing, "bright", plate, opacity, style + f" on a {plate} plate")

    return _legible_fit(rng, canvas, corner, build, plate_tone if plated else None)


def _ruler_ink(length: int, thick: int, n_ticks: int, stroke: int, base_far: bool) -> np.ndarray:
    """A horizontal ruler (``thick x length``): a base line and ticks, every fifth one long."""
    ink = np.zeros((thick, length), np.float32)
    base = thick - 1 - stroke // 2 if base_far else stroke // 2
    cv2.line(ink, (0, base), (length - 1, base), 1.0, stroke, cv2.LINE_8)
    for i in range(n_ticks + 1):
        x = round(i * (length - 1 - stroke) / n_ticks) + stroke // 2
        tick = round((0.9 if i % 5 == 0 else 0.45) * (thick - 1))
        end = base - tick if base_far else base + tick
        cv2.line(ink, (x, base), (x, end), 1.0, stroke, cv2.LINE_8)
    return ink


def make_ruler(rng: np.random.Generator, canvas: Canvas, corner: str, cue_class: int, n_classes: int) -> Placed | None:
    """A radio-opaque ruler with tick marks along an edge from ``corner``, with or without a backing strip."""
    s = canvas.side
    length, thick = float(rng.uniform(0.18, 0.3)) * s, float(rng.uniform(0.03, 0.05)) * s
    n_ticks = int(rng.integers(6, 13))  # ticks a few model pixels apart, not one blur
    vertical = bool(rng.random() < 0.4)
    base_far = bool(rng.random() < 0.5)
    backed = bool(rng.random() < 0.5)
    opacity = float(rng.uniform(0.85, 1.0))
    stroke = max(1, round(s / 170))

    def build(scale: float, plate: str | None) -> Stamp:
        """The ruler at ``scale`` of its drawn size, bare or on a backing strip."""
        ln, th = max(8, round(length * scale)), max(4, round(thick * scale))
        ink = _ruler_ink(ln, th, n_ticks, stroke, base_far)
        backing = None
        if plate is not None:
            ink, backing = _with_plate(ink, max(1, round(th * 0.2)))
        if vertical:
            ink, backing = ink.T.copy(), None if backing is None else backing.T.copy()
        style = f"ruler {n_ticks} ticks {ln}px {'vertical' if vertical else 'horizontal'} {'on a strip' if plate else 'bare'}"
        return Stamp(ink, backing, "bright", "dark", opacity, style)

    return _legible_fit(rng, canvas, corner, build, "dark" if backed else None)


def make_patch(rng: np.random.Generator, canvas: Canvas, corner: str, cue_class: int, n_classes: int) -> Placed | None:
    """A uniform bright (or, on a bright corner, dark) rectangle: a film label or ID blocker."""
    s = canvas.side
    w, h = float(rng.uniform(0.06, 0.12)) * s, float(rng.uniform(0.04, 0.09)) * s
    opacity = float(rng.uniform(0.85, 1.0))

    def build(scale: float) -> Stamp:
        ph, pw = max(3, round(h * scale)), max(3, round(w * scale))
        return Stamp(np.ones((ph, pw), np.float32), None, "bright", "dark", opacity, f"patch {pw}x{ph}px")

    return _first_fit(rng, canvas, corner, build)


def make_band(rng: np.random.Generator, canvas: Canvas, edge: str, cue_class: int, n_classes: int) -> Placed | None:
    """A collimation band along the whole ``edge``: dark (shutter) or bright (unexposed), soft inner rim."""
    s = canvas.side
    width = min(round(float(rng.uniform(0.025, 0.06)) * s), canvas.edge_depth(edge))
    ramp = int(rng.integers(1, 4))
    tone = "dark" if rng.random() < 0.6 else "bright"
    opacity = float(rng.uniform(0.8, 1.0))
    if width < max(2, round(0.012 * s)):
        return None
    profile = np.ones(width, np.float32)  # outer edge first
    k = min(ramp, width - 1)
    if k > 0:
        profile[width - k :] = np.linspace(1.0, 0.0, k + 2, dtype=np.float32)[1:-1]
    if edge in ("right", "bottom"):
        profile = profile[::-1].copy()
    if edge in ("left", "right"):
        ink = np.tile(profile, (canvas.height, 1))
        y, x = 0, 0 if edge == "left" else canvas.width - width
    else:
        ink = np.tile(profile[:, None], (1, canvas.width))
        y, x = (0 if edge == "top" else canvas.height - width), 0
    if not canvas.fits(y, x, *ink.shape):
        return None
    return Placed(Stamp(ink, None, tone, "dark", opacity, f"band {edge} {width}px {tone}"), y, x)


# Anchors per class: for two classes every cue of class 0 sits on the left, class 1 on the right, and
# the corner cues take the bottom corners first: real laterality markers crowd the top corners, and a
# planted cue there would compete with (or hide behind) them rather than be a cue of its own.
BOTTOM_FIRST: tuple[str, ...] = ("BL", "BR", "TL", "TR")
KINDS: dict[str, CueKind] = {
    "text": CueKind("text", BOTTOM_FIRST, 3, make_text),
    "ruler": CueKind("ruler", BOTTOM_FIRST, 1, make_ruler),
    "band": CueKind("band", EDGES, 1, make_band),
    "patch": CueKind("patch", BOTTOM_FIRST, 1, make_patch),
}


def make_cue(kind: str, rng: np.random.Generator, canvas: Canvas, cue_class: int, n_classes: int) -> Placed | None:
    """Stamp of ``kind`` pointing at ``cue_class`` and where it goes on ``canvas``, or None if none fits."""
    spec = KINDS[kind]
    return spec.make(rng, canvas, spec.anchors[cue_class], cue_class, n_classes)


__all__ = ["KINDS", "TOKENS", "CueKind", "Placed", "make_cue", "tokens_for"]
