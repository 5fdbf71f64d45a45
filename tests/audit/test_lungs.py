"""Lung filling (tissue the segmenter missed) and the region names near the image edge."""

from __future__ import annotations

import torch

from lungaudit.audit.lungs import fill_lungs, midline
from lungaudit.audit.metrics import lung_energy
from lungaudit.audit.regions import BELOW, BORDER, dominant_region, region_labels


def _two_lungs(size: int = 64) -> torch.Tensor:
    """Two upright rectangles, columns 10..25 and 38..53, rows 8..47 (a gap at 26..37)."""
    m = torch.zeros(1, size, size, dtype=torch.bool)
    m[0, 8:48, 10:26] = True
    m[0, 8:48, 38:54] = True
    return m


def test_midline_sits_in_the_gap_between_the_lungs():
    assert 26 <= float(midline(_two_lungs())) <= 37


def test_holes_and_edge_bites_are_filled_but_not_the_gap_between_lungs():
    m = _two_lungs()
    m[0, 20:26, 14:20] = False  # a hole (a nodule the segmenter left out)
    m[0, 30:40, 10:14] = False  # a bite at the lateral edge (a consolidation), lung above and below
    filled = fill_lungs(m)
    assert filled[0, 20:26, 14:20].all() and filled[0, 30:40, 10:14].all()
    assert not filled[0, :, 26:38].any()  # nothing between the lungs
    assert torch.equal(filled, _two_lungs())  # exactly the lungs back, nothing more


def test_the_cardiac_notch_stays_out():
    m = _two_lungs()
    m[0, 32:48, 38:46] = False  # the heart's impression: lower medial corner, no lung below or medial
    filled = fill_lungs(m)
    assert not filled[0, 32:48, 38:46].any()
    assert torch.equal(filled, m)


def test_fill_moves_heat_on_missed_tissue_inside_the_tolerant_lungs():
    m = _two_lungs()
    m[0, 30:40, 10:14] = False
    cams = torch.zeros(1, 64, 64)
    cams[0, 30:40, 10:14] = 1.0  # the model looks at the consolidation the mask left out
    cams[0, 20:30, 40:44] = 1.0  # and equally (40 px each) at the other lung
    plain = lung_energy(cams, m, 0)
    filled = lung_energy(cams, m, 0, fill=True)
    assert float(plain["e_out_tol"]) == 0.5  # half the heat outside the given mask
    assert float(filled["e_out_tol"]) == 0.0
    assert float(filled["e_out"]) == 0.5  # the strict E_out still uses the mask as given


def test_heat_under_a_lung_near_the_bottom_edge_is_below_not_border():
    m = torch.zeros(1, 64, 64, dtype=torch.bool)
    m[0, 8:58, 10:26] = True  # lungs reach close to the bottom edge (border band: rows 56..63 at 0.12)
    m[0, 8:58, 38:54] = True
    labels = region_labels(m, 0.12)
    assert int(labels[0, 60, 18]) == BELOW  # 2 px under the left lung
    assert int(labels[0, 62, 2]) == BORDER  # the corner, away from the lungs
    cams = torch.zeros(1, 64, 64)
    cams[0, 59:62, 14:22] = 1.0
    index, _ = dominant_region(cams, m, 0.12)
    assert int(index[0]) == BELOW
