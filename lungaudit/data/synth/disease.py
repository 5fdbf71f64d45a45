"""Step 2: the class signal, drawn only inside the lung mask with a random severity.

Normal: clear lungs; COVID: bilateral peripheral lower-zone ground glass; Lung_Opacity: one focal
dense consolidation; Viral Pneumonia: perihilar interstitial streaks. Draws continue the patient's
anatomy generator, so both images of a patient also share their disease.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from lungaudit.config import CLASS_NAMES
from lungaudit.data.synth.anatomy import Geometry
from lungaudit.data.synth.raster import smooth_noise, unit_grid


def _covid(rng: np.random.Generator, s: int, geo: Geometry, mask: np.ndarray, sev: float) -> np.ndarray:
    """Ground glass weighted toward each lung's lateral edge and lower zone, ``(s, s)``."""
    xx, yy = unit_grid(s)
    tex = np.clip(1 + 0.45 * smooth_noise(rng, s, s / 40), 0.2, None)
    out = np.zeros((s, s), np.float32)
    for g in geo.lungs:
        lat = (xx - g.cx) * g.side / g.a  # > 0 toward the lung's lateral edge
        w_per = 1 / (1 + np.exp(-(lat - 0.05) / 0.18))
        w_low = 1 / (1 + np.exp(-(yy - g.cy) / (0.22 * g.b)))
        out += w_per * w_low
    return 0.32 * sev * out * tex


def _lung_opacity(rng: np.random.Generator, s: int, geo: Geometry, mask: np.ndarray, sev: float) -> np.ndarray:
    """One dense blob centred deep enough inside a random lung to stay mostly within it, ``(s, s)``."""
    xx, yy = unit_grid(s)
    which = int(rng.integers(2))
    lung = geo.lung_masks[which]
    if not lung.any():
        lung = mask
    dist = cv2.distanceTransform(lung.astype(np.uint8), cv2.DIST_L2, 3)
    r = rng.uniform(0.055, 0.085) * s
    ys, xs = np.nonzero(dist >= min(0.6 * r, float(dist.max())))
    j = int(rng.integers(len(ys)))
    cx, cy = (xs[j] + 0.5) / s, (ys[j] + 0.5) / s
    rr = r / s
    d2 = ((xx - cx) ** 2 + ((yy - cy) / rng.uniform(0.8, 1.3)) ** 2) / rr**2
    blob = np.exp(-0.5 * d2) * (1 + 0.35 * smooth_noise(rng, s, s / 60))
    return 0.5 * sev * np.clip(1.5 * blob - 0.25, 0, 1)


def _viral_pneumonia(rng: np.random.Generator, s: int, geo: Geometry, mask: np.ndarray, sev: float) -> np.ndarray:
    """Streaks fanning laterally from each hilum over a perihilar haze, ``(s, s)``."""
    xx, yy = unit_grid(s)
    streaks = np.zeros((s, s), np.float32)
    thick = max(1, round(s / 128))
    haze = np.zeros((s, s), np.float32)
    for g in geo.lungs:
        hx = g.cx - g.side * 0.45 * g.a
        hy = g.cy - 0.02
        for _ in range(16):
            ang = rng.uniform(-0.5 * np.pi, 0.5 * np.pi)  # pointing laterally
            length = rng.uniform(0.10, 0.24)
            x0 = hx + g.side * rng.uniform(0, 0.03)
            y0 = hy + rng.normal(0, 0.03)
            x1 = x0 + g.side * length * np.cos(ang)
            y1 = y0 + length * np.sin(ang)
            p0 = (int(x0 * s * 16), int(y0 * s * 16))
            p1 = (int(x1 * s * 16), int(y1 * s * 16))
            cv2.line(streaks, p0, p1, 1.0, thickness=thick, lineType=cv2.LINE_AA, shift=4)
        haze += np.exp(-(((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * 0.13**2)))
    haze = np.clip(haze, 0, 1)
    return sev * haze * (0.30 * np.clip(streaks, 0, 1) + 0.12)


_PATTERNS: dict[str, Callable[[np.random.Generator, int, Geometry, np.ndarray, float], np.ndarray]] = {
    "COVID": _covid,
    "Lung_Opacity": _lung_opacity,
    "Viral Pneumonia": _viral_pneumonia,
}


def disease(
    rng: np.random.Generator, label: str, size: int, geo: Geometry, mask: np.ndarray, severity_min: float
) -> tuple[np.ndarray, float]:
    """Additive float32 density ``(size, size)`` of ``label``'s signal, zero outside the bool lung
    ``mask``; returns ``(map, severity)`` with severity 0 for Normal, else in ``[severity_min, 1]``."""
    if label == "Normal":
        return np.zeros((size, size), np.float32), 0.0
    pattern = _PATTERNS.get(label)
    if pattern is None:
        raise ValueError(f"unknown class {label!r}; valid: {', '.join(CLASS_NAMES)}")
    sev = float(rng.uniform(severity_min, 1.0))
    out = pattern(rng, size, geo, mask, sev)
    # fade to the (blurred) air edge so the signal has no hard rim, and never leave the mask
    return (out * geo.air * mask).astype(np.float32), sev
