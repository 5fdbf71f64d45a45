"""Overlay pictures of flagged images: heatmap, lung contour, marker box and the flag's reasons.

Each flagged image gets a full-size PNG in ``overlays/`` and a small JPEG thumbnail of it in
``thumbs/`` (same stem). The HTML report shows the thumbnails and links the full overlays, so a
report stays small at thousands of flagged images.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from lungaudit.audit.markers import Box
from lungaudit.audit.schema import AuditRow
from lungaudit.utils import atomic_write_bytes, atomic_write_png, safe_filename

OVERLAY_DIR = "overlays"
THUMB_DIR = "thumbs"
OVERLAY_SIDE = 320
THUMB_SIDE = 160
THUMB_QUALITY = 70


def overlay_name(index: int, key: str) -> str:
    """``overlays/000042_<safe stem>.png``: unique by the running index, readable by the stem."""
    return f"{OVERLAY_DIR}/{index:06d}_{safe_filename(PurePosixPath(key.replace(chr(92), '/')).stem, 60)}.png"


def thumbnail_for(overlay_rel: str) -> str:
    """The thumbnail's path for an overlay's (both relative to the audit folder)."""
    return f"{THUMB_DIR}/{PurePosixPath(overlay_rel).stem}.jpg"


def _two(v: float | None) -> str:
    """Two decimals for a person reading an overlay; the CSV keeps full precision."""
    return "n/a" if v is None or not np.isfinite(v) else f"{float(v):.2f}"


def overlay_lines(row: AuditRow) -> list[str]:
    lines = [
        f"pred {row.pred} ({row.prob_pred:.2f})" + (f"  true {row.label}" if row.label else ""),
        f"E_in {_two(row.e_in)} (tol {_two(row.e_in_tol)})  region {row.region or '-'}",
        "reasons: " + (";".join(row.reasons) or "-"),
    ]
    return [line.encode("ascii", "replace").decode("ascii") for line in lines]  # Hershey fonts are ASCII-only


def render_overlay(
    image: np.ndarray, mask: np.ndarray, cam: np.ndarray, box: Box | None, lines: list[str], side: int = OVERLAY_SIDE
) -> np.ndarray:
    """Image + heatmap + lung contour (green) + marker box (cyan) + text lines, as BGR uint8.

    Args:
        image: (S, S) float in [0, 1]; mask: (S, S) bool; cam: (S, S) >= 0; box at S x S or None.
    """
    scale = side / image.shape[0]
    gray = cv2.resize((image * 255).astype(np.uint8), (side, side), interpolation=cv2.INTER_LINEAR)
    heat = cam / cam.max() if cam.max() > 0 else cam
    heat = cv2.applyColorMap(cv2.resize((heat * 255).astype(np.uint8), (side, side)), cv2.COLORMAP_JET)
    out = cv2.addWeighted(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), 0.55, heat, 0.45, 0)
    big_mask = cv2.resize(mask.astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big_mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (0, 255, 0), 1, cv2.LINE_AA)
    if box is not None:
        x0, y0, x1, y1 = (int(round(v * scale)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), (255, 255, 0), 2)
    banner = np.zeros((16 * len(lines) + 6, side, 3), np.uint8)
    for k, line in enumerate(lines):
        cv2.putText(banner, line, (4, 14 + 16 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([out, banner])


def thumbnail_jpeg(overlay: np.ndarray, side: int = THUMB_SIDE, quality: int = THUMB_QUALITY) -> bytes:
    """A small JPEG of a BGR overlay, width ``side`` (aspect kept)."""
    h, w = overlay.shape[:2]
    small = cv2.resize(overlay, (side, max(1, round(h * side / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError("could not encode a JPEG thumbnail")
    return buf.tobytes()


def write_overlay(out_dir: Path, rel: str, picture: np.ndarray) -> None:
    """The overlay PNG and its thumbnail; no fsync (both can be redrawn from the CSV row)."""
    atomic_write_png(out_dir / rel, picture, durable=False)
    atomic_write_bytes(out_dir / thumbnail_for(rel), thumbnail_jpeg(picture), durable=False)


__all__ = [
    "OVERLAY_DIR", "THUMB_DIR", "overlay_lines", "overlay_name", "render_overlay", "thumbnail_for",
    "thumbnail_jpeg", "write_overlay",
]
