"""Pictures of one prediction for the web page: the lung outline and one overlay per explanation map.

They reuse the audit's overlay drawing (:func:`~lungaudit.audit.overlay.render_overlay`: heatmap,
green lung contour, cyan marker box) without its text banner, which the page shows as text instead.
JPEGs travel inside the JSON answer as data URLs, so nothing is written to disk.
"""

from __future__ import annotations

import base64

import cv2
import numpy as np

from lungaudit.audit.markers import Box
from lungaudit.audit.overlay import OVERLAY_SIDE, render_overlay

LABELS: dict[str, str] = {
    "outline": "Lung outline",
    "gradcam": "Grad-CAM",
    "gradcampp": "Grad-CAM++",
    "guided_gradcam": "Guided Grad-CAM",
    "guided_backprop": "Guided backpropagation",
}


def method_label(name: str, audited: bool = False) -> str:
    label = LABELS.get(name, name.replace("_", " "))
    return f"{label} (audited)" if audited else label


def outline_picture(image: np.ndarray, lungs: np.ndarray, box: Box | None, side: int = OVERLAY_SIDE) -> np.ndarray:
    """The input in gray with the lung contour (green) and the marker box (cyan), BGR uint8 (side, side, 3).

    Args:
        image: (S, S) float in [0, 1]; lungs: (S, S) bool; box at S x S or None.
    """
    gray = cv2.resize((np.clip(image, 0, 1) * 255).astype(np.uint8), (side, side), interpolation=cv2.INTER_LINEAR)
    out = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    big = cv2.resize(lungs.astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (0, 255, 0), 2, cv2.LINE_AA)
    if box is not None:
        scale = side / image.shape[0]
        x0, y0, x1, y1 = (int(round(v * scale)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), (255, 255, 0), 2)
    return out


def heat_picture(
    image: np.ndarray, lungs: np.ndarray, heat: np.ndarray, box: Box | None, side: int = OVERLAY_SIDE, robust: bool = False
) -> np.ndarray:
    """The audit's overlay of ``heat`` without the text banner, (side, side, 3) BGR uint8.

    The map is scaled to its maximum, or with ``robust`` to its 99.5th percentile: pixel-level maps
    (guided Grad-CAM) are a few needles on a faint field, and the needles alone would set the scale.
    """
    heat = np.nan_to_num(np.asarray(heat, np.float32), nan=0.0, posinf=0.0, neginf=0.0).clip(min=0)
    if robust and heat.max() > 0:
        top = float(np.percentile(heat, 99.5)) or float(heat.max())
        heat = np.clip(heat / top, 0.0, 1.0)
    return render_overlay(image, lungs, heat, box, [], side=side)[:side]


JPEG_QUALITY = 90


def picture_data_url(picture: np.ndarray) -> str:
    """The picture as a JPEG data URL (quality 90).

    JPEG, not PNG: a heatmap overlay is a photograph-like gradient that PNG compresses badly. The four
    pictures of one answer were 630 KB and 19 ms of encoding as PNG; they are 70 KB and 2 ms as JPEG.
    Under concurrent load that time and the JSON the clients parse are taken from the device pass's CPU.
    The numbers the page shows travel in the JSON, not in the pictures.
    """
    ok, buf = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError("could not encode a JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


__all__ = ["LABELS", "heat_picture", "method_label", "outline_picture", "picture_data_url"]
