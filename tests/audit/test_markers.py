"""The marker search at a bounded working resolution finds burned-in text where it is on large films."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lungaudit.audit.markers import markers_at_working_resolution


@pytest.mark.parametrize("shape", [(1000, 900), (3001, 2467)])  # below and far above 2x the working side
def test_a_corner_marker_is_found_where_it_is(shape: tuple[int, int]) -> None:
    h, w = shape
    rng = np.random.default_rng(0)
    film = ((0.35 + 0.05 * rng.standard_normal((h, w))).clip(0, 1) * 255).astype(np.uint8)
    lungs = np.zeros((h, w), bool)
    lungs[h // 5 : 4 * h // 5, w // 6 : 5 * w // 6] = True
    # a bold "R" in the bottom-right corner, about 6% of the side
    scale = h / 400
    x, y = int(w * 0.86), int(h * 0.95)
    cv2.putText(film, "R", (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, max(2, int(3 * scale)), cv2.LINE_AA)
    boxes = markers_at_working_resolution(film.astype(np.float32) / 255, lungs, 512, (128, 128))
    assert boxes, "no marker found"
    # the box (at 128 x 128) covers where the letter is (also at 128 x 128)
    cx, cy = x / w * 128, y / h * 128
    assert any(x0 - 2 <= cx <= x1 + 6 and y0 - 8 <= cy <= y1 + 2 for x0, y0, x1, y1 in boxes), boxes
    assert all(0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128 for x0, y0, x1, y1 in boxes)
