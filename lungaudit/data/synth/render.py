"""One phantom from its :class:`CaseParams`: anatomy -> disease -> acquisition -> shortcuts."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from lungaudit.config import SHORTCUT_KINDS
from lungaudit.data.synth.acquire import acquire
from lungaudit.data.synth.anatomy import anatomy
from lungaudit.data.synth.disease import disease
from lungaudit.data.synth.plan import CaseParams
from lungaudit.data.synth.shortcuts import plant_marker, plant_shoulders


def render_case(params: CaseParams) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Render one phantom.

    Returns ``(image, mask, twin, meta)``: ``image`` uint8 ``(size, size)``; ``mask`` uint8 in {0, 255}
    (exactly the lung fields); ``twin`` the same image without the spatial shortcuts (None unless
    ``params.make_twin``); ``meta`` with ``severity``, ``shortcuts`` (kinds planted), ``boxes``
    (kind -> half-open ``(x0, y0, x1, y1)``), ``marker_corner`` and ``shoulder_level``.
    """
    arng = np.random.default_rng(list(params.anatomy_key))
    nrng = np.random.default_rng(list(params.noise_key))
    dens, mask, geo = anatomy(arng, params.size)
    disease_map, sev = disease(arng, params.label, params.size, geo, mask, params.severity_min)
    base = acquire(nrng, dens + disease_map, params.source)

    # shortcuts may not touch the lungs: keep a one-pixel guard ring around the mask
    forbidden = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    image = base.copy()  # the twin keeps base
    kinds: list[str] = []
    boxes: dict[str, tuple[int, int, int, int]] = {}
    meta: dict[str, Any] = {"severity": sev, "marker_corner": None, "shoulder_level": None}
    if params.shoulder_class is not None:
        image, box, meta["shoulder_level"] = plant_shoulders(image, geo, forbidden, params.shoulder_class)
        kinds.append("shoulders")
        if box is not None:
            boxes["shoulders"] = box
    if params.marker_class is not None:
        image, box = plant_marker(
            nrng, image, params.marker_class, forbidden, params.marker_vocab, params.marker_plate
        )
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
