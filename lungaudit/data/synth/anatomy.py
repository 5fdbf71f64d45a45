"""Step 1: the patient's anatomy - body, shoulders, lungs, heart, spine, ribs, clavicles.

Every draw comes from one generator seeded by the patient (``CaseParams.anatomy_key``), so the two
images of a patient share their anatomy. The draw order is part of the output: reordering draws
changes every image and needs a ``GENERATOR_VERSION`` bump.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lungaudit.data.synth.raster import fill, poly_px, smooth_noise, unit_grid


@dataclass(frozen=True)
class LungField:
    """One lung's ellipse in normalised coordinates; ``side`` is -1 for the image-left lung
    (patient's right) and +1 for the image-right lung."""

    cx: float
    cy: float
    a: float  # half-width
    b: float  # half-height
    side: int


@dataclass(frozen=True, eq=False)
class Geometry:
    """What the disease and shortcut steps need to know about the drawn anatomy.

    ``lung_masks``: bool ``(size, size)`` per lung (heart removed); ``air``: float32 ``(size, size)``,
    the lung mask blurred to a radiographic edge; ``body_mask``: bool ``(size, size)``;
    ``shoulder_y`` / ``apex_y``: normalised heights of the shoulder line and of the lung apices.
    """

    lungs: tuple[LungField, ...]
    lung_masks: tuple[np.ndarray, ...]
    air: np.ndarray
    body_mask: np.ndarray
    shoulder_y: float
    apex_y: float


def _lung_outline(rng: np.random.Generator, cx: float, cy: float, a: float, b: float, medial: int) -> np.ndarray:
    """Jittered, apex-tapered ellipse, ``(96, 2)`` normalised (x, y). ``medial`` is +1 when the
    midline is to the right of the lung (image-left lung) and -1 otherwise."""
    t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    r = np.ones_like(t)
    for k in (2, 3, 4, 5):
        r += rng.uniform(0, 0.05 / (k - 1)) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    upper = np.clip(-np.sin(t), 0, None)  # 1 at the apex (y grows downward)
    taper = rng.uniform(0.25, 0.45)
    x = a * r * np.cos(t) * (1 - taper * upper)
    y = b * r * np.sin(t)
    # straighten the medial border a little: pull medial points toward a flatter line
    med = (np.sign(np.cos(t)) == medial) & (np.abs(y) < 0.7 * b)
    x = np.where(med, x * rng.uniform(0.8, 0.95), x)
    return np.stack([cx + x, cy + y], axis=1)


def _soft_tissue(rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Body silhouette with sloping shoulders: ``(density, body_mask, shoulder_shift)``, the first
    two float32 ``(s, s)``; the shift moves the shoulder line up or down (normalised)."""
    sh = rng.uniform(-0.03, 0.03)  # shoulder height
    w = rng.uniform(-0.03, 0.03)  # body width
    neck = rng.uniform(0.09, 0.13)
    body = np.array(
        [
            (0.5 - neck, 0.0),
            (0.5 + neck, 0.0),
            (0.62, 0.07 + sh),
            (0.86 + w, 0.10 + sh),
            (1.02 + w, 0.18 + sh),
            (0.97 + w, 0.55),
            (0.95 + w, 1.02),
            (0.05 - w, 1.02),
            (0.03 - w, 0.55),
            (-0.02 - w, 0.18 + sh),
            (0.14 - w, 0.10 + sh),
            (0.38, 0.07 + sh),
        ]
    )
    body += rng.normal(0, 0.006, body.shape)
    body_mask = fill(s, [body]).astype(np.float32)
    tissue = rng.uniform(0.42, 0.52)
    dens = 0.03 + (tissue - 0.03) * cv2.GaussianBlur(body_mask, (0, 0), sigmaX=max(1.0, s / 128))
    return dens, body_mask, float(sh)


def _lung_fields(
    rng: np.random.Generator, s: int, xx: np.ndarray, yy: np.ndarray
) -> tuple[list[np.ndarray], list[LungField], float]:
    """Both lungs cut by their diaphragm domes: bool ``(s, s)`` masks (image-left first), their
    ellipses and the shared centre height ``cy``."""
    cy = rng.uniform(0.47, 0.52)
    masks: list[np.ndarray] = []
    fields: list[LungField] = []
    for side in (-1, 1):
        lcx = 0.5 + side * rng.uniform(0.17, 0.21)
        lcy = cy + rng.normal(0, 0.012) + (0.01 if side > 0 else 0.0)
        a = rng.uniform(0.125, 0.16) * (0.95 if side > 0 else 1.0)
        b = rng.uniform(0.28, 0.32)
        outline = _lung_outline(rng, lcx, lcy, a, b, medial=-side)
        lung = fill(s, [outline]).astype(bool)
        # diaphragm dome: remove lung below a convex-up curve (the right hemidiaphragm sits higher)
        base = lcy + b * rng.uniform(0.80, 0.92) + (0.015 if side > 0 else 0.0)
        dome_h = rng.uniform(0.05, 0.09)
        dome = base - dome_h * np.clip(1 - ((xx - lcx) / (1.15 * a)) ** 2, 0, None)
        lung &= yy < dome
        masks.append(lung)
        fields.append(LungField(cx=lcx, cy=lcy, a=a, b=b, side=side))
    return masks, fields, float(cy)


def _heart(rng: np.random.Generator, s: int, cy: float) -> np.ndarray:
    """uint8 ``(s, s)`` heart ellipse on the image's right (patient's left), overlapping the
    medial right lung."""
    heart = np.zeros((s, s), np.uint8)
    hc = (0.5 + rng.uniform(0.05, 0.08), cy + rng.uniform(0.11, 0.15))
    hax = (rng.uniform(0.13, 0.16), rng.uniform(0.10, 0.13))
    cv2.ellipse(
        heart,
        (int(hc[0] * s * 16), int(hc[1] * s * 16)),
        (int(hax[0] * s * 16), int(hax[1] * s * 16)),
        rng.uniform(-30, -15),
        0,
        360,
        1,
        -1,
        lineType=cv2.LINE_8,
        shift=4,
    )
    return heart


def _spine(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """float ``(s, s)`` spine profile with vertebral bodies, peak 1 on the midline."""
    sx = 0.5 + rng.normal(0, 0.008)
    period = rng.uniform(0.055, 0.07)
    return np.exp(-(((xx - sx) / 0.028) ** 4)) * (0.75 + 0.25 * np.cos(2 * np.pi * yy / period))


def _ribs(rng: np.random.Generator, s: int, xx: np.ndarray, yy: np.ndarray, body_mask: np.ndarray) -> np.ndarray:
    """Additive density ``(s, s)`` of curved rib bands on both sides, drawn through lungs and soft
    tissue alike."""
    adx = np.abs(xx - 0.5)
    n_ribs = 9
    top = rng.uniform(0.15, 0.19)
    spacing = rng.uniform(0.066, 0.076)
    curve = rng.uniform(0.8, 1.0)
    thick = max(0.010, 1.6 / s)
    ribs = np.zeros((s, s), np.float32)
    lateral = (adx > 0.04) & (adx < 0.44)
    for k in range(n_ribs):
        yk = top + k * spacing - 0.25 * adx + curve * adx**2 + rng.normal(0, 0.004)
        np.maximum(ribs, np.exp(-(((yy - yk) / thick) ** 2)), out=ribs)
    return rng.uniform(0.06, 0.09) * ribs * lateral * body_mask


def _clavicles(rng: np.random.Generator, s: int, sh: float) -> np.ndarray:
    """float32 ``(s, s)`` clavicles and humeral heads (unblurred, peak 1) for shoulder shift ``sh``."""
    clav = np.zeros((s, s), np.float32)
    ct = max(1, round(0.02 * s))
    for side in (-1, 1):
        pts = np.array(
            [
                (0.5 + side * 0.05, 0.155 + sh / 2),
                (0.5 + side * 0.17, 0.135 + sh / 2 + rng.normal(0, 0.005)),
                (0.5 + side * 0.33, 0.115 + sh + rng.normal(0, 0.005)),
            ]
        )
        cv2.polylines(clav, [poly_px(pts, s)], False, 1.0, thickness=ct, lineType=cv2.LINE_AA, shift=4)
        cv2.circle(
            clav,
            (int((0.5 + side * 0.47) * s * 16), int((0.20 + sh) * s * 16)),
            int(rng.uniform(0.06, 0.075) * s * 16),
            0.8,
            -1,
            lineType=cv2.LINE_AA,
            shift=4,
        )
    return clav


def anatomy(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """Draw one patient: ``(density, lung_mask, geometry)``.

    ``density`` is float32 ``(size, size)``, roughly 0..1, bright = dense; ``lung_mask`` is bool
    ``(size, size)``, exactly the drawn lung fields.
    """
    s = size
    xx, yy = unit_grid(s)
    dens, body_mask, sh = _soft_tissue(rng, s)
    lungs, fields, cy = _lung_fields(rng, s, xx, yy)
    heart = _heart(rng, s, cy)
    heart_b = heart.astype(bool)
    lungs = [lung & ~heart_b for lung in lungs]
    mask = lungs[0] | lungs[1]

    # lungs are dark; the air edge is blurred so boundaries look radiographic
    air = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigmaX=max(0.8, s / 170))
    lung_dark = rng.uniform(0.24, 0.32)
    dens -= lung_dark * air * (0.9 + 0.1 * yy)  # slightly denser at the bases
    dens += 0.07 * cv2.GaussianBlur(heart.astype(np.float32), (0, 0), sigmaX=max(1.0, s / 100))
    dens += 0.16 * _spine(rng, xx, yy) * body_mask
    dens += _ribs(rng, s, xx, yy, body_mask)
    dens += 0.16 * cv2.GaussianBlur(_clavicles(rng, s, sh), (0, 0), sigmaX=max(0.6, s / 256)) * body_mask
    dens += 0.015 * smooth_noise(rng, s, s / 90) * air  # vascular texture, class-independent

    geo = Geometry(
        lungs=tuple(fields),
        lung_masks=tuple(lungs),
        air=air,
        body_mask=body_mask.astype(bool),
        shoulder_y=float(0.10 + sh),
        apex_y=float(np.argmax(mask.any(axis=1))) / s if mask.any() else 0.2,
    )
    return dens.astype(np.float32), mask, geo
