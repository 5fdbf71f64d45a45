"""Regions outside the lungs on synthetic masks and hotspots, and the burned-in marker finder."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from lungaudit.audit.markers import find_marker_boxes, hotspot_overlaps_marker
from lungaudit.audit.regions import REGION_NAMES, dominant_region, region_labels, region_maps

S = 64


def two_lungs(size: int = S) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    cv2.ellipse(m, (int(size * 0.32), int(size * 0.5)), (int(size * 0.12), int(size * 0.25)), 0, 0, 360, 1, -1)
    cv2.ellipse(m, (int(size * 0.68), int(size * 0.53)), (int(size * 0.12), int(size * 0.27)), 0, 0, 360, 1, -1)
    return m.astype(bool)


def hotspot(y: int, x: int, size: int = S, sigma: float = 1.5) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2)).float()


def test_regions_disjoint_and_cover_with_lungs() -> None:
    masks = torch.from_numpy(np.stack([two_lungs(), np.zeros((S, S), bool), np.ones((S, S), bool)]))
    maps = region_maps(masks, 0.1)
    assert maps.shape == (3, len(REGION_NAMES), S, S) and maps.dtype == torch.bool
    count = maps.sum(1) + masks.long()
    assert bool((count == 1).all())


def test_region_geometry_on_two_lungs() -> None:
    m = torch.from_numpy(two_lungs())[None]
    lab = region_labels(m, 0.1)[0]
    name = lambda y, x: "lung" if lab[y, x] < 0 else REGION_NAMES[lab[y, x]]  # noqa: E731
    assert name(2, 32) == "border" and name(32, 1) == "border" and name(62, 62) == "border"
    assert name(10, 32) == "above"  # neck, above both apices
    assert name(61 - 6, 20) == "below"  # abdomen under the left lung
    assert name(32, 8) == "lateral" and name(32, 57) == "lateral"
    assert name(32, 32) == "mediastinum"
    assert name(32, 20) == "lung"


@pytest.mark.parametrize(
    ("y", "x", "expected"),
    [(3, 3, "border"), (60, 58, "border"), (10, 32, "above"), (56, 20, "below"), (33, 8, "lateral"), (33, 32, "mediastinum")],
)
def test_dominant_region_names_a_synthetic_hotspot(y: int, x: int, expected: str) -> None:
    masks = torch.from_numpy(two_lungs())[None].float()
    cams = hotspot(y, x)[None] + 1e-4  # a faint floor everywhere: the hotspot must still win
    idx, share = dominant_region(cams, masks, 0.1, tolerance_px=2)
    assert REGION_NAMES[idx.item()] == expected
    assert share.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert share[0, idx.item()] > 0.4


def test_dominant_region_without_outside_energy() -> None:
    masks = torch.from_numpy(two_lungs())[None]
    cams = masks.float() * 2.0  # all energy inside the lungs
    idx, share = dominant_region(cams, masks, 0.1, tolerance_px=1)
    assert idx.item() == -1 and all(math.isnan(v) for v in share[0].tolist())


def test_regions_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="border_frac"):
        region_maps(torch.zeros(1, 8, 8), 0.6)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        region_maps(torch.zeros(8, 8), 0.1)


# --- burned-in markers --------------------------------------------------------------------------


def phantom(size: int, seed: int, text: str | None = None, corner: str = "tl") -> tuple[np.ndarray, np.ndarray]:
    """A noisy chest-like background (body, shoulders, ribs, spine) with an optional corner token."""
    rng = np.random.default_rng(seed)
    s = size
    img = np.full((s, s), 0.08, np.float32)
    cv2.ellipse(img, (s // 2, int(s * 0.62)), (int(s * 0.42), int(s * 0.5)), 0, 0, 360, 0.5, -1)
    cv2.ellipse(img, (int(s * 0.2), int(s * 0.2)), (int(s * 0.18), int(s * 0.07)), -20, 0, 360, 0.6, -1)
    cv2.ellipse(img, (int(s * 0.8), int(s * 0.2)), (int(s * 0.18), int(s * 0.07)), 20, 0, 360, 0.6, -1)
    lungs = two_lungs(s)
    img[lungs] = 0.25
    for k in range(8):
        y = int(s * (0.3 + 0.07 * k))
        cv2.ellipse(img, (s // 2, y), (int(s * 0.33), int(s * 0.06)), 0, 180, 360, 0.62, max(1, s // 128))
    cv2.rectangle(img, (int(s * 0.47), int(s * 0.2)), (int(s * 0.53), int(s * 0.95)), 0.7, -1)
    img = cv2.GaussianBlur(img, (0, 0), s / 128) + rng.normal(0, 0.03, (s, s)).astype(np.float32)
    if text:
        th = max(1, round(s / 128))
        (tw, tht), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, s / 256, th)
        m = int(s * 0.03)
        x = m if corner[1] == "l" else s - m - tw
        y = m + tht if corner[0] == "t" else s - m - base
        layer = np.zeros((s, s), np.uint8)  # OpenCV >= 5 draws text on 8-bit images only
        cv2.putText(layer, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, s / 256, 255, th, cv2.LINE_AA)
        img = np.maximum(img, layer.astype(np.float32) / 255)
    return np.clip(img, 0, 1), lungs


@pytest.mark.parametrize("size", [128, 256])
@pytest.mark.parametrize(("text", "corner"), [("L", "tl"), ("PORT", "tr"), ("R", "bl"), ("AP", "br")])
def test_markers_found_in_the_right_corner(size: int, text: str, corner: str) -> None:
    imgs, masks = zip(*(phantom(size, seed, text, corner) for seed in range(3)))
    for boxes in find_marker_boxes(np.stack(imgs), torch.from_numpy(np.stack(masks))):
        assert boxes, f"{text} not found"
        for x0, y0, x1, y1 in boxes:
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            assert (cy < size * 0.2) == (corner[0] == "t") and (cy > size * 0.8) == (corner[0] == "b")
            assert (cx < size / 2) == (corner[1] == "l")


@pytest.mark.parametrize("size", [128, 256])
def test_no_markers_on_plain_backgrounds(size: int) -> None:
    imgs, masks = zip(*(phantom(size, seed) for seed in range(4)))
    assert find_marker_boxes(np.stack(imgs), np.stack(masks)) == [[]] * 4
    yy, xx = np.mgrid[0:size, 0:size] / size
    smooth = (0.3 + 0.3 * yy + 0.1 * xx).astype(np.float32)[None]
    assert find_marker_boxes(smooth, np.zeros_like(smooth, bool)) == [[]]


def test_markers_reject_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        find_marker_boxes(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        find_marker_boxes(np.full((1, 8, 8), 255.0), np.zeros((1, 8, 8)))


def test_hotspot_overlaps_marker() -> None:
    img, lungs = phantom(128, 0, "L", "tl")
    (boxes,) = find_marker_boxes(img[None], lungs[None])
    x0, y0, x1, y1 = boxes[0]
    on_marker = hotspot((y0 + y1) // 2, (x0 + x1) // 2, 128, sigma=6)
    assert hotspot_overlaps_marker(on_marker, lungs, boxes)
    assert hotspot_overlaps_marker(on_marker.numpy(), None, boxes)
    # A coarse CAM peak a few pixels off the box still counts (pad), a far one does not.
    assert hotspot_overlaps_marker(hotspot(y1 + 3, x1 + 3, 128, sigma=6), lungs, boxes)
    assert not hotspot_overlaps_marker(hotspot(64, 64, 128, sigma=6), lungs, boxes)
    # The hottest spot inside the lungs is ignored: only the out-of-lung hotspot matters.
    cam = hotspot(64, 40, 128, sigma=4) * 5 + on_marker
    assert hotspot_overlaps_marker(cam, lungs, boxes)
    assert not hotspot_overlaps_marker(cam, lungs, [])
    assert not hotspot_overlaps_marker(torch.zeros(128, 128), lungs, boxes)
