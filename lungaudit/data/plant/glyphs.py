"""Burned-in text as an alpha mask: OpenCV's Hershey faces and DejaVu TrueType fonts.

Real stamps come from many printers and consoles, so one face would teach a model (and the auditor's
marker finder) a single glyph shape. The Hershey faces are stroke fonts drawn by OpenCV; the DejaVu
faces are rendered by Pillow from the TTF files matplotlib ships (``mpl-data/fonts/ttf``). When those
files are missing the Hershey faces are used alone, with a logged warning.

Output is byte-identical for the same OpenCV/Pillow/FreeType versions; another FreeType may
anti-alias a glyph edge differently.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

CAP_HEIGHT_PER_EM = 0.73  # DejaVu's capital height as a fraction of the em size


@dataclass(frozen=True)
class Font:
    """A Hershey face (``hershey`` is the cv2 constant) or a TrueType file name under matplotlib's fonts."""

    name: str
    hershey: int | None = None
    ttf: str | None = None


HERSHEY_FONTS: tuple[Font, ...] = (
    Font("hershey-simplex", hershey=cv2.FONT_HERSHEY_SIMPLEX),
    Font("hershey-duplex", hershey=cv2.FONT_HERSHEY_DUPLEX),
    Font("hershey-complex", hershey=cv2.FONT_HERSHEY_COMPLEX),
    Font("hershey-triplex", hershey=cv2.FONT_HERSHEY_TRIPLEX),
)
TRUETYPE_FONTS: tuple[Font, ...] = (
    Font("dejavu-sans", ttf="DejaVuSans.ttf"),
    Font("dejavu-sans-bold", ttf="DejaVuSans-Bold.ttf"),
    Font("dejavu-sans-mono", ttf="DejaVuSansMono.ttf"),
    Font("dejavu-serif-bold", ttf="DejaVuSerif-Bold.ttf"),
)


def _ttf_dir() -> Path | None:
    try:
        import matplotlib

        return Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    except ImportError:
        return None


@functools.lru_cache(maxsize=1)
def available_fonts() -> tuple[Font, ...]:
    """The Hershey faces plus every DejaVu face whose file exists (in a fixed order)."""
    folder = _ttf_dir()
    ttf = tuple(f for f in TRUETYPE_FONTS if folder is not None and (folder / f.ttf).is_file())  # type: ignore[operator]
    if len(ttf) < len(TRUETYPE_FONTS):
        log.warning("DejaVu TrueType fonts not found under matplotlib's data folder; stamps use Hershey faces only")
    return HERSHEY_FONTS + ttf


def _crop(canvas: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(canvas.any(1)), np.flatnonzero(canvas.any(0))
    if len(rows) == 0:
        raise ValueError("text rendered to nothing")
    return canvas[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _hershey(token: str, face: int, cap_px: float, weight: float) -> np.ndarray:
    thick = max(1, round(cap_px * weight))
    (_, h1), _ = cv2.getTextSize("L", face, 1.0, thick)
    scale = cap_px / max(h1, 1)
    (tw, th), base = cv2.getTextSize(token, face, scale, thick)
    pad = thick + 2
    canvas = np.zeros((th + base + 2 * pad, tw + 2 * pad), np.uint8)
    # Anti-aliasing leaves faint strokes at small sizes; burned-in text that small is crisp anyway.
    line = cv2.LINE_AA if cap_px >= 10 else cv2.LINE_8
    cv2.putText(canvas, token, (pad, pad + th), face, scale, 255, thick, line)
    return canvas


@functools.lru_cache(maxsize=64)
def _truetype(file: str, size: int):  # noqa: ANN202 - PIL.ImageFont.FreeTypeFont
    from PIL import ImageFont

    return ImageFont.truetype(str(_ttf_dir() / file), size)  # type: ignore[operator]


def _ttf(token: str, file: str, cap_px: float) -> np.ndarray:
    from PIL import Image, ImageDraw

    font = _truetype(file, max(4, round(cap_px / CAP_HEIGHT_PER_EM)))
    x0, y0, x1, y1 = font.getbbox(token)
    pad = 2
    img = Image.new("L", (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad), 0)
    ImageDraw.Draw(img).text((pad - x0, pad - y0), token, fill=255, font=font)
    return np.asarray(img, dtype=np.uint8)


def render_text(token: str, font: Font, cap_px: float, weight: float = 0.1) -> np.ndarray:
    """Alpha mask (float32 in [0, 1], tightly cropped) of ``token`` with capitals ``cap_px`` tall.

    ``weight`` is the stroke width as a fraction of the capital height (Hershey faces only; a
    TrueType face has its own weight).
    """
    if cap_px <= 0:
        raise ValueError(f"cap_px must be positive, got {cap_px}")
    canvas = _hershey(token, font.hershey, cap_px, weight) if font.hershey is not None else _ttf(token, font.ttf, cap_px)  # type: ignore[arg-type]
    return _crop(canvas).astype(np.float32) / np.float32(255.0)


__all__ = ["Font", "HERSHEY_FONTS", "TRUETYPE_FONTS", "available_fonts", "render_text"]
