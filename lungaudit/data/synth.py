"""Synthetic chest X-ray phantoms with exact lung masks, planted shortcuts and clean twins.

The generator is the project's default data set and the ground truth for the auditor:

* **Anatomy** (body, shoulders, clavicles, ribs, spine, heart, diaphragm domes, two lung fields) varies
  per patient; the lung mask is exactly the drawn lung fields.
* **Class signal lives only inside the lung mask** and has random severity in
  ``[severity_min, 1]``; by default some cases are nearly invisible, so the lungs alone do not
  separate the classes perfectly (as on real films) and a shortcut pays off for every class.
  Normal: clear lungs; COVID: bilateral peripheral lower-zone ground glass; Lung_Opacity: one focal
  dense consolidation; Viral Pneumonia: perihilar interstitial streaks.
* **Shortcuts live only outside the lung mask** and are class-correlated at ``shortcut_rate`` in train
  and val, independent of the class in test:

  - ``markers``: a burned-in text stamp in a corner; class ``k`` owns corner ``k`` (TL, TR, BL, BR in
    ``CLASS_NAMES`` order). Every image carries one stamp. With ``marker_vocab="corner"`` each corner
    has its own words (as each hospital stamps its own), so the words and the corner are the cue;
    with ``"shared"`` any word goes anywhere and only the corner is. ``marker_plate`` burns the
    stamp onto a dark box, which keeps it legible on the bright abdomen in the bottom corners.
  - ``shoulders``: a brightness offset on the shoulders above the lungs, one level per class.
  - ``source``: the acquisition source (exposure, noise, border style) prefers one source per class.

* **Clean twins**: each test image is rendered once without the spatial shortcuts (the twin) and the
  cues are pasted into a copy, so image and twin differ only inside the shortcut boxes.

Output follows the COVID-19 Radiography Database layout (``<CLASS>/images``, ``<CLASS>/masks``,
``<CLASS>.metadata.xlsx``) plus ``twins/<CLASS>/``, ``manifest.csv`` and ``synth_config.yaml``.
Files are byte-identical for a given config, whatever the worker count.

Manifest conventions: paths are relative to the output folder with forward slashes. ``shortcut`` is
the ``;``-joined list of shortcut kinds planted in the image (a kind is planted in every image when
enabled; its *value* - corner, level, source - carries the class). ``shortcut_box`` holds one box per
spatial kind, ``;``-joined in the order ``markers;shoulders``, each ``x0 y0 x1 y1`` in pixels,
half-open (``image[y0:y1, x0:x1]``); with the default ``("markers",)`` it is the single marker box.
"""

from __future__ import annotations

import csv
import io
import logging
import multiprocessing
import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lungaudit.config import CLASS_NAMES, SHORTCUT_KINDS, SynthConfig, save_config
from lungaudit.utils import atomic_write_bytes, atomic_write_png, atomic_write_text

log = logging.getLogger(__name__)

MANIFEST_COLUMNS: tuple[str, ...] = (
    "path",
    "mask",
    "label",
    "split",
    "source",
    "patient_id",
    "shortcut",
    "shortcut_box",
    "twin",
)
# Bumped whenever the same config would render different pixels, so caches keyed on it go stale.
GENERATOR_VERSION = 2
CORNER_NAMES: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right")
MARKER_TOKENS: tuple[str, ...] = ("L", "R", "PORT", "AP", "SUP", "CXR", "ER", "ICU")
# marker_vocab="corner": the words each corner (TL, TR, BL, BR) draws from
CORNER_TOKENS: tuple[tuple[str, ...], ...] = (("PORT", "L"), ("AP", "R"), ("SUP", "ER"), ("CXR", "ICU"))
MARKER_VOCABS: tuple[str, ...] = ("corner", "shared")
SHOULDER_LEVELS: tuple[float, ...] = (0.16, 0.06, -0.06, -0.16)  # additive brightness, per class
PLATE_LEVEL = 25  # grey level of the dark box behind a plated stamp
PAIR_FRACTION = 0.1  # fraction of patients that contribute two images
URL_ROOT = "https://synthetic.lungaudit"

# Per-source acquisition: (gamma, gain, offset, noise sigma, border style). Styles: 0 none,
# 1 black padding band on the left, 2 dark collimation frame, 3 black padding band on the right.
_SOURCE_STYLES: tuple[tuple[float, float, float, float, int], ...] = (
    (1.00, 1.00, 0.00, 0.015, 0),
    (0.80, 0.92, 0.05, 0.035, 1),
    (1.25, 1.05, -0.02, 0.025, 2),
    (0.90, 0.95, 0.03, 0.020, 3),
    (1.15, 1.00, 0.00, 0.030, 2),
    (0.85, 1.05, -0.03, 0.040, 1),
)


def source_name(i: int) -> str:
    """``source-A``, ``source-B``, ... for source index ``i`` (0-based)."""
    return f"source-{chr(ord('A') + i)}"


def source_url(i: int) -> str:
    return f"{URL_ROOT}/{source_name(i)}"


@dataclass(frozen=True)
class CaseParams:
    """Everything needed to render and write one image; plain data so it pickles cheaply.

    ``marker_class`` / ``shoulder_class`` name the class whose cue is planted (None: cue disabled).
    ``anatomy_key`` seeds anatomy and disease, shared by the images of one patient; ``noise_key``
    seeds the per-image noise and marker token.
    """

    label: str
    file_index: int  # 1-based within the class, as in the real data base
    split: str
    source: int
    patient_id: str
    size: int
    anatomy_key: tuple[int, ...]
    noise_key: tuple[int, ...]
    marker_class: int | None = None
    shoulder_class: int | None = None
    source_cue: bool = False
    make_twin: bool = False
    severity_min: float = SynthConfig.severity_min
    marker_vocab: str = SynthConfig.marker_vocab
    marker_plate: bool = SynthConfig.marker_plate

    @property
    def class_index(self) -> int:
        return CLASS_NAMES.index(self.label)

    @property
    def stem(self) -> str:
        return f"{self.label}-{self.file_index}"


# --------------------------------------------------------------------------------------------------
# rendering


def _smooth_noise(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered white noise (float32, ``size x size``)."""
    n = rng.standard_normal((size, size), dtype=np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigmaX=max(sigma_px, 0.5), borderType=cv2.BORDER_REFLECT)
    s = float(n.std())
    return n / s if s > 0 else n


def _poly_px(points: np.ndarray, size: int) -> np.ndarray:
    """Normalised (x, y) points to int32 pixel coordinates with 4 fractional bits for fillPoly."""
    return np.round(points * size * 16).astype(np.int32).reshape(-1, 1, 2)


def _fill(size: int, polys: Sequence[np.ndarray]) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillPoly(canvas, [_poly_px(p, size) for p in polys], 1, lineType=cv2.LINE_8, shift=4)
    return canvas


def _lung_outline(rng: np.random.Generator, cx: float, cy: float, a: float, b: float, medial: int) -> np.ndarray:
    """Jittered, apex-tapered ellipse (normalised coordinates). ``medial`` is +1 when the midline is
    to the right of the lung (image-left lung) and -1 otherwise."""
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


def _anatomy(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Density image (float32, roughly 0..1, bright = dense) and the lung mask (bool).

    Returns also the geometry the disease and shortcut stages need.
    """
    s = size
    coords = (np.arange(s, dtype=np.float32) + 0.5) / s
    xx, yy = np.meshgrid(coords, coords)

    # body silhouette with sloping shoulders
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
    body_mask = _fill(s, [body]).astype(np.float32)
    tissue = rng.uniform(0.42, 0.52)
    dens = 0.03 + (tissue - 0.03) * cv2.GaussianBlur(body_mask, (0, 0), sigmaX=max(1.0, s / 128))

    # lung fields
    cy = rng.uniform(0.47, 0.52)
    lungs = []
    geo: dict[str, Any] = {"lungs": []}
    for side in (-1, 1):  # -1: image-left lung (patient's right), +1: image-right lung
        lcx = 0.5 + side * rng.uniform(0.17, 0.21)
        lcy = cy + rng.normal(0, 0.012) + (0.01 if side > 0 else 0.0)
        a = rng.uniform(0.125, 0.16) * (0.95 if side > 0 else 1.0)
        b = rng.uniform(0.28, 0.32)
        outline = _lung_outline(rng, lcx, lcy, a, b, medial=-side)
        lung = _fill(s, [outline]).astype(bool)
        # diaphragm dome: remove lung below a convex-up curve (the right hemidiaphragm sits higher)
        base = lcy + b * rng.uniform(0.80, 0.92) + (0.015 if side > 0 else 0.0)
        dome_h = rng.uniform(0.05, 0.09)
        dome = base - dome_h * np.clip(1 - ((xx - lcx) / (1.15 * a)) ** 2, 0, None)
        lung &= yy < dome
        lungs.append(lung)
        geo["lungs"].append({"cx": lcx, "cy": lcy, "a": a, "b": b, "side": side})

    # heart shadow on the image's right (patient's left), overlapping the medial right lung
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
    heart_b = heart.astype(bool)
    lungs = [lung & ~heart_b for lung in lungs]
    mask = lungs[0] | lungs[1]
    geo["lung_masks"] = lungs

    # lungs are dark; the air edge is blurred so boundaries look radiographic
    air = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigmaX=max(0.8, s / 170))
    geo["air"] = air
    lung_dark = rng.uniform(0.24, 0.32)
    dens -= lung_dark * air * (0.9 + 0.1 * yy)  # slightly denser at the bases
    dens += 0.07 * cv2.GaussianBlur(heart.astype(np.float32), (0, 0), sigmaX=max(1.0, s / 100))

    # spine with vertebral bodies
    sx = 0.5 + rng.normal(0, 0.008)
    period = rng.uniform(0.055, 0.07)
    spine = np.exp(-(((xx - sx) / 0.028) ** 4)) * (0.75 + 0.25 * np.cos(2 * np.pi * yy / period))
    dens += 0.16 * spine * body_mask

    # ribs: curved bright bands, on both sides, drawn through lungs and soft tissue alike
    dx = xx - 0.5
    adx = np.abs(dx)
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
    dens += rng.uniform(0.06, 0.09) * ribs * lateral * body_mask

    # clavicles and humeral heads
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
        cv2.polylines(clav, [_poly_px(pts, s)], False, 1.0, thickness=ct, lineType=cv2.LINE_AA, shift=4)
        cv2.circle(
            clav,
            (int((0.5 + side * 0.47) * s * 16), int((0.20 + sh) * s * 16)),
            int(rng.uniform(0.06, 0.075) * s * 16),
            0.8,
            -1,
            lineType=cv2.LINE_AA,
            shift=4,
        )
    dens += 0.16 * cv2.GaussianBlur(clav, (0, 0), sigmaX=max(0.6, s / 256)) * body_mask

    # vascular texture in the lungs (class-independent)
    dens += 0.015 * _smooth_noise(rng, s, s / 90) * air

    geo.update(
        body_mask=body_mask.astype(bool),
        shoulder_y=float(0.10 + sh),
        apex_y=float(np.argmax(mask.any(axis=1))) / s if mask.any() else 0.2,
    )
    return dens.astype(np.float32), mask, geo


def _disease(
    rng: np.random.Generator, label: str, size: int, geo: dict[str, Any], mask: np.ndarray, severity_min: float
) -> tuple[np.ndarray, float]:
    """Additive density of the class signal, zero outside ``mask``; returns (map, severity)."""
    s = size
    if label == "Normal":
        return np.zeros((s, s), np.float32), 0.0
    sev = float(rng.uniform(severity_min, 1.0))
    coords = (np.arange(s, dtype=np.float32) + 0.5) / s
    xx, yy = np.meshgrid(coords, coords)
    out = np.zeros((s, s), np.float32)
    if label == "COVID":
        tex = np.clip(1 + 0.45 * _smooth_noise(rng, s, s / 40), 0.2, None)
        for g in geo["lungs"]:
            lat = (xx - g["cx"]) * g["side"] / g["a"]  # > 0 toward the lung's lateral edge
            w_per = 1 / (1 + np.exp(-(lat - 0.05) / 0.18))
            w_low = 1 / (1 + np.exp(-(yy - g["cy"]) / (0.22 * g["b"])))
            out += w_per * w_low
        out = 0.32 * sev * out * tex
    elif label == "Lung_Opacity":
        which = int(rng.integers(2))
        lung = geo["lung_masks"][which]
        if not lung.any():
            lung = mask
        dist = cv2.distanceTransform(lung.astype(np.uint8), cv2.DIST_L2, 3)
        r = rng.uniform(0.055, 0.085) * s
        ys, xs = np.nonzero(dist >= min(0.6 * r, float(dist.max())))
        j = int(rng.integers(len(ys)))
        cx, cy = (xs[j] + 0.5) / s, (ys[j] + 0.5) / s
        rr = r / s
        d2 = ((xx - cx) ** 2 + ((yy - cy) / rng.uniform(0.8, 1.3)) ** 2) / rr**2
        blob = np.exp(-0.5 * d2) * (1 + 0.35 * _smooth_noise(rng, s, s / 60))
        out = 0.5 * sev * np.clip(1.5 * blob - 0.25, 0, 1)
    elif label == "Viral Pneumonia":
        streaks = np.zeros((s, s), np.float32)
        thick = max(1, round(s / 128))
        haze = np.zeros((s, s), np.float32)
        for g in geo["lungs"]:
            hx = g["cx"] - g["side"] * 0.45 * g["a"]
            hy = g["cy"] - 0.02
            for _ in range(16):
                ang = rng.uniform(-0.5 * np.pi, 0.5 * np.pi)  # pointing laterally
                length = rng.uniform(0.10, 0.24)
                x0 = hx + g["side"] * rng.uniform(0, 0.03)
                y0 = hy + rng.normal(0, 0.03)
                x1 = x0 + g["side"] * length * np.cos(ang)
                y1 = y0 + length * np.sin(ang)
                p0 = (int(x0 * s * 16), int(y0 * s * 16))
                p1 = (int(x1 * s * 16), int(y1 * s * 16))
                cv2.line(streaks, p0, p1, 1.0, thickness=thick, lineType=cv2.LINE_AA, shift=4)
            haze += np.exp(-(((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * 0.13**2)))
        haze = np.clip(haze, 0, 1)
        out = sev * haze * (0.30 * np.clip(streaks, 0, 1) + 0.12)
    else:
        raise ValueError(f"unknown class {label!r}; valid: {', '.join(CLASS_NAMES)}")
    # fade to the (blurred) air edge so the signal has no hard rim, and never leave the mask
    return (out * geo["air"] * mask).astype(np.float32), sev


def _acquire(rng: np.random.Generator, dens: np.ndarray, source: int) -> np.ndarray:
    """Exposure, noise and border of ``source``; returns uint8."""
    s = dens.shape[0]
    gamma, gain, offset, sigma, style = _SOURCE_STYLES[source % len(_SOURCE_STYLES)]
    img = np.clip(dens, 0, 1) ** gamma * gain + offset
    img = img + rng.normal(0, sigma, img.shape).astype(np.float32)
    band = max(2, round(0.045 * s))
    if style == 1:
        img[:, :band] = 0
    elif style == 3:
        img[:, s - band :] = 0
    elif style == 2:
        frame = np.ones((s, s), np.float32)
        frame[:band, :] = frame[-band:, :] = frame[:, :band] = frame[:, -band:] = 0.25
        img = img * frame
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def pick_token(rng: np.random.Generator, corner: int, vocab: str) -> str:
    """The stamp's word: from the corner's own words (``corner``) or from all of them (``shared``)."""
    words = CORNER_TOKENS[corner] if vocab == "corner" else MARKER_TOKENS
    return words[int(rng.integers(len(words)))]


def _marker_layer(
    rng: np.random.Generator, size: int, corner: int, forbidden: np.ndarray, vocab: str
) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """uint8 layer holding a text token in ``corner`` (0 TL, 1 TR, 2 BL, 3 BR), cleared on
    ``forbidden`` pixels; returns the layer and the half-open bounding box of its nonzero pixels."""
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
    return layer, _bbox(layer > 0)


def _bbox(on: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.nonzero(on.any(axis=1))[0], np.nonzero(on.any(axis=0))[0]
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def render_case(params: CaseParams) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Render one phantom.

    Returns ``(image, mask, twin, meta)``: ``image`` uint8 ``(size, size)``; ``mask`` uint8 in {0, 255}
    (exactly the lung fields); ``twin`` the same image without the spatial shortcuts (None unless
    ``params.make_twin``); ``meta`` with ``severity``, ``shortcuts`` (kinds planted), ``boxes``
    (kind -> half-open ``(x0, y0, x1, y1)``), ``marker_corner`` and ``shoulder_level``.
    """
    s = params.size
    arng = np.random.default_rng(list(params.anatomy_key))
    nrng = np.random.default_rng(list(params.noise_key))
    dens, mask, geo = _anatomy(arng, s)
    disease, sev = _disease(arng, params.label, s, geo, mask, params.severity_min)
    base = _acquire(nrng, dens + disease, params.source)

    # shortcuts may not touch the lungs: keep a one-pixel guard ring around the mask
    forbidden = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    image = base.copy()
    kinds: list[str] = []
    boxes: dict[str, tuple[int, int, int, int]] = {}
    meta: dict[str, Any] = {"severity": sev, "marker_corner": None, "shoulder_level": None}

    if params.shoulder_class is not None:
        level = SHOULDER_LEVELS[params.shoulder_class]
        coords = (np.arange(s, dtype=np.float32) + 0.5) / s
        xx, yy = np.meshgrid(coords, coords)
        y_end = min(geo["apex_y"] - 0.02, geo["shoulder_y"] + 0.16)
        region = geo["body_mask"] & (np.abs(xx - 0.5) > 0.16) & (yy < y_end) & ~forbidden
        weight = np.where(region, 1.0, 0.0).astype(np.float32)
        shifted = np.clip(image.astype(np.float32) + 255 * level * weight, 0, 255).astype(np.uint8)
        changed = shifted != image
        image = shifted
        kinds.append("shoulders")
        box = _bbox(changed)
        if box is not None:
            boxes["shoulders"] = box
        meta["shoulder_level"] = level

    if params.marker_class is not None:
        layer, box = _marker_layer(nrng, s, params.marker_class, forbidden, params.marker_vocab)
        intensity = nrng.uniform(0.85, 1.0)
        if params.marker_plate and box is not None:
            pad = max(1, round(0.012 * s))
            plate = np.zeros((s, s), bool)
            plate[max(0, box[1] - pad) : box[3] + pad, max(0, box[0] - pad) : box[2] + pad] = True
            plate &= ~forbidden
            image = np.where(plate, np.minimum(image, PLATE_LEVEL), image)
            box = _bbox(plate)
        image = np.maximum(image, np.round(layer * intensity).astype(np.uint8))
        kinds.append("markers")
        if box is not None:
            boxes["markers"] = box
        meta["marker_corner"] = params.marker_class

    if params.source_cue:
        kinds.append("source")
    meta["shortcuts"] = [k for k in SHORTCUT_KINDS if k in kinds]
    meta["boxes"] = boxes
    twin = base if params.make_twin else None
    return image, (mask.astype(np.uint8) * 255), twin, meta


# --------------------------------------------------------------------------------------------------
# planning


def validate(cfg: SynthConfig) -> None:
    """Raise ``ValueError`` with a clear message for a config the generator cannot honour."""
    unknown = [k for k in cfg.shortcuts if k not in SHORTCUT_KINDS]
    if unknown:
        raise ValueError(f"unknown shortcut kind(s) {', '.join(unknown)}; valid: {', '.join(SHORTCUT_KINDS)}")
    if not 0.0 <= cfg.shortcut_rate <= 1.0:
        raise ValueError(f"shortcut_rate must be in [0, 1], got {cfg.shortcut_rate}")
    if cfg.n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {cfg.n_per_class}")
    if cfg.size < 32:
        raise ValueError(f"size must be at least 32 px, got {cfg.size}")
    if not (0 <= cfg.val_frac and 0 <= cfg.test_frac and cfg.val_frac + cfg.test_frac < 1):
        raise ValueError(f"val_frac and test_frac must be >= 0 and sum below 1, got {cfg.val_frac}, {cfg.test_frac}")
    if not 1 <= cfg.n_sources <= 26:
        raise ValueError(f"n_sources must be in 1..26, got {cfg.n_sources}")
    if cfg.workers < 0:
        raise ValueError(f"workers must be >= 0, got {cfg.workers}")
    if not 0.0 <= cfg.severity_min <= 1.0:
        raise ValueError(f"severity_min must be in [0, 1], got {cfg.severity_min}")
    if cfg.marker_vocab not in MARKER_VOCABS:
        raise ValueError(f"marker_vocab must be one of {', '.join(MARKER_VOCABS)}, got {cfg.marker_vocab!r}")


def _correlated(rng: np.random.Generator, own: int, n: int, rate: float, split: str) -> int:
    """``own`` with probability ``rate`` in train/val (else a uniform other value); uniform in test."""
    if split == "test" or n == 1:
        return int(rng.integers(n))
    if rng.random() < rate:
        return own
    other = int(rng.integers(n - 1))
    return other if other < own else other + 1


def plan_cases(cfg: SynthConfig) -> list[CaseParams]:
    """Decide label, split, patient, source and shortcut values of every image (deterministic)."""
    validate(cfg)
    rng = np.random.default_rng([cfg.seed, 0x5EED])
    n = cfg.n_per_class
    cases: list[CaseParams] = []
    for c, label in enumerate(CLASS_NAMES):
        # patients: ~PAIR_FRACTION of them contribute two images (same anatomy, new noise)
        n_pairs = int(round(n * PAIR_FRACTION / (1 + PAIR_FRACTION)))
        order = rng.permutation(n) + 1
        groups = [sorted(order[2 * k : 2 * k + 2].tolist()) for k in range(n_pairs)]
        groups += [[int(i)] for i in order[2 * n_pairs :]]
        groups = [groups[k] for k in rng.permutation(len(groups))]
        # patient-grouped, class-stratified split
        n_test = int(round(cfg.test_frac * n))
        n_val = int(round(cfg.val_frac * n))
        split_of: dict[int, tuple[str, int]] = {}
        counts = {"test": 0, "val": 0}
        for g in groups:
            if counts["test"] < n_test:
                sp = "test"
            elif counts["val"] < n_val:
                sp = "val"
            else:
                sp = "train"
            if sp in counts:
                counts[sp] += len(g)
            for i in g:
                split_of[i] = (sp, g[0])
        for i in range(1, n + 1):
            sp, first = split_of[i]
            g_index = c * n + (i - 1)
            src = (
                _correlated(rng, c % cfg.n_sources, cfg.n_sources, cfg.shortcut_rate, sp)
                if "source" in cfg.shortcuts
                else int(rng.integers(cfg.n_sources))
            )
            marker = _correlated(rng, c, 4, cfg.shortcut_rate, sp) if "markers" in cfg.shortcuts else None
            shoulder = _correlated(rng, c, 4, cfg.shortcut_rate, sp) if "shoulders" in cfg.shortcuts else None
            cases.append(
                CaseParams(
                    label=label,
                    file_index=i,
                    split=sp,
                    source=src,
                    patient_id=f"synth-{label.replace(' ', '_')}-{first}",
                    size=cfg.size,
                    anatomy_key=(cfg.seed, c * n + (first - 1), 1),
                    noise_key=(cfg.seed, g_index),
                    marker_class=marker,
                    shoulder_class=shoulder,
                    source_cue="source" in cfg.shortcuts,
                    make_twin=sp == "test",
                    severity_min=cfg.severity_min,
                    marker_vocab=cfg.marker_vocab,
                    marker_plate=cfg.marker_plate,
                )
            )
    return cases


# --------------------------------------------------------------------------------------------------
# writing


def _rel(label: str, kind: str, stem: str) -> str:
    return f"{label}/{kind}/{stem}.png"


def _write_case(job: tuple[Path, CaseParams]) -> dict[str, str]:
    out, p = job
    image, mask, twin, meta = render_case(p)
    img_rel, mask_rel = _rel(p.label, "images", p.stem), _rel(p.label, "masks", p.stem)
    atomic_write_png(out / img_rel, image)
    atomic_write_png(out / mask_rel, mask)
    twin_rel = ""
    if twin is not None:
        twin_rel = f"twins/{p.label}/{p.stem}.png"
        atomic_write_png(out / twin_rel, twin)
    boxes = meta["boxes"]
    box_str = ";".join(" ".join(str(v) for v in boxes[k]) for k in ("markers", "shoulders") if k in boxes)
    return {
        "path": img_rel,
        "mask": mask_rel,
        "label": p.label,
        "split": p.split,
        "source": source_name(p.source),
        "patient_id": p.patient_id,
        "shortcut": ";".join(meta["shortcuts"]),
        "shortcut_box": box_str,
        "twin": twin_rel,
    }


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; avoid oversubscription


def _deterministic_xlsx(rows: list[tuple[str, str, str, str]]) -> bytes:
    """A metadata workbook like the real data base's, with fixed timestamps so bytes are stable."""
    import datetime

    from openpyxl import Workbook
    from openpyxl.writer.excel import ExcelWriter

    wb = Workbook()
    ws = wb.active
    ws.title = "Sheet1"
    ws.append(["FILE NAME", "FORMAT", "SIZE", "URL"])
    for r in rows:
        ws.append(list(r))
    fixed = datetime.datetime(2020, 1, 1)
    wb.properties.created = wb.properties.modified = fixed
    wb.properties.creator = "lungaudit synth"
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        ExcelWriter(wb, archive).save()
    # zip entries carry the wall-clock time; rewrite them with a fixed one
    out = io.BytesIO()
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            zi = zipfile.ZipInfo(info.filename, date_time=(2020, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            dst.writestr(zi, src.read(info.filename))
    return out.getvalue()


def generate(out: Path, cfg: SynthConfig, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the synthetic data set under ``out`` and return the path of ``manifest.csv``.

    ``progress(done, total)`` is called after each image. Raises ``ValueError`` for an invalid config.
    """
    out = Path(out)
    cases = plan_cases(cfg)
    out.mkdir(parents=True, exist_ok=True)
    for label in CLASS_NAMES:
        for sub in ("images", "masks"):
            (out / label / sub).mkdir(parents=True, exist_ok=True)
        (out / "twins" / label).mkdir(parents=True, exist_ok=True)
    workers = cfg.workers or os.cpu_count() or 1
    jobs = [(out, p) for p in cases]
    total = len(jobs)
    rows: list[dict[str, str]] = []
    log.info("generating %d phantoms at %d px with %d worker(s) into %s", total, cfg.size, workers, out)
    if workers == 1:
        _init_worker()
        for j in jobs:
            rows.append(_write_case(j))
            if progress:
                progress(len(rows), total)
    else:
        chunk = max(1, min(16, total // (workers * 8)))
        with multiprocessing.get_context().Pool(workers, initializer=_init_worker) as pool:
            for row in pool.imap(_write_case, jobs, chunksize=chunk):
                rows.append(row)
                if progress:
                    progress(len(rows), total)

    for label in CLASS_NAMES:
        meta_rows = [
            (p.stem, "PNG", f"{cfg.size}*{cfg.size}", source_url(p.source)) for p in cases if p.label == label
        ]
        atomic_write_bytes(out / f"{label}.metadata.xlsx", _deterministic_xlsx(meta_rows))

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    manifest = out / "manifest.csv"
    atomic_write_text(manifest, buf.getvalue())
    save_config(cfg, out / "synth_config.yaml")
    return manifest


__all__ = [
    "CORNER_NAMES",
    "MANIFEST_COLUMNS",
    "CaseParams",
    "generate",
    "plan_cases",
    "render_case",
    "source_name",
    "source_url",
    "validate",
]
