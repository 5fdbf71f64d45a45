"""Pure audit metrics on hand-made heatmaps, masks and probabilities with hand-computed answers."""

from __future__ import annotations

import math

import pytest
import torch

from lungaudit.audit.metrics import REASONS, dilate_masks, flag, lung_energy, masking_counterfactual


def test_lung_energy_by_hand() -> None:
    # 4x4 image, lung = left two columns. Heat: 3 units in the lung, 1 unit at (0, 3), 0 elsewhere.
    masks = torch.zeros(1, 4, 4)
    masks[0, :, :2] = 1
    cams = torch.zeros(1, 4, 4)
    cams[0, 1, 1] = 3.0
    cams[0, 0, 3] = 1.0
    e = lung_energy(cams, masks, tolerance_px=0)
    assert e["e_in"].item() == pytest.approx(0.75)
    assert e["e_out"].item() == pytest.approx(0.25)
    assert e["e_in_tol"].item() == pytest.approx(0.75)  # t = 0: the tolerant variant is the strict one
    assert e["lung_area"].item() == pytest.approx(0.5)
    assert e["e_in_ratio"].item() == pytest.approx(1.5)
    assert not e["no_evidence"].item()
    # t = 1 dilates the lung to columns 0..2: (0, 3) is still outside; a hot pixel at column 2 is not.
    cams[0, 2, 2] = 4.0  # total 8: strict in 3/8, tolerant in 7/8
    e = lung_energy(cams, masks.bool(), tolerance_px=1)
    assert e["e_in"].item() == pytest.approx(3 / 8)
    assert e["e_in_tol"].item() == pytest.approx(7 / 8)
    assert e["e_out_tol"].item() == pytest.approx(1 / 8)
    # t = 2 covers the whole 4-wide image.
    assert lung_energy(cams, masks, tolerance_px=2)["e_in_tol"].item() == pytest.approx(1.0)


def test_dilation_is_a_square_by_hand() -> None:
    m = torch.zeros(1, 5, 5, dtype=torch.bool)
    m[0, 2, 2] = True
    d = dilate_masks(m, 1)
    expected = torch.zeros(1, 5, 5)
    expected[0, 1:4, 1:4] = 1
    assert torch.equal(d, expected)
    assert torch.equal(dilate_masks(m, 0), m.float())


def test_no_evidence_is_nan_never_zero_or_one() -> None:
    cams = torch.zeros(2, 3, 3)
    cams[1, 0, 0] = 1.0
    masks = torch.ones(2, 3, 3)
    e = lung_energy(cams, masks, 1)
    assert e["no_evidence"].tolist() == [True, False]
    for k in ("e_in", "e_out", "e_in_tol", "e_out_tol", "e_in_ratio"):
        assert math.isnan(e[k][0].item()), k
        assert not math.isnan(e[k][1].item()), k
    assert e["e_in"][1].item() == 1.0 and e["lung_area"][0].item() == 1.0


def test_empty_lung_mask_ratio_is_nan() -> None:
    e = lung_energy(torch.ones(1, 2, 2), torch.zeros(1, 2, 2), 0)
    assert e["e_in"].item() == 0.0 and e["e_out"].item() == 1.0
    assert math.isnan(e["e_in_ratio"].item())


@pytest.mark.parametrize(
    ("cams", "masks", "tol", "match"),
    [
        (torch.ones(2, 3), torch.ones(2, 3), 0, r"\(N, H, W\)"),
        (torch.ones(1, 3, 3), torch.ones(1, 3, 4), 0, "same"),
        (-torch.ones(1, 3, 3), torch.ones(1, 3, 3), 0, "non-negative"),
        (torch.full((1, 3, 3), float("nan")), torch.ones(1, 3, 3), 0, "finite"),
        (torch.ones(1, 3, 3), torch.full((1, 3, 3), 0.5), 0, "binary"),
        (torch.ones(1, 3, 3), torch.ones(1, 3, 3), -1, "tolerance_px"),
        (torch.ones(1, 3, 3), torch.ones(1, 3, 3), 1.5, "tolerance_px"),
    ],
)
def test_lung_energy_rejects_bad_input(cams: torch.Tensor, masks: torch.Tensor, tol: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lung_energy(cams, masks, tol)


def test_masking_counterfactual_by_hand() -> None:
    full = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    masked = torch.tensor([[0.3, 0.6, 0.1], [0.1, 0.7, 0.2], [0.2, 0.2, 0.6]])
    pf, pm, flip, drop = masking_counterfactual(full, masked)
    assert pf.tolist() == [0, 1, 2]
    assert pm.tolist() == [1, 1, 2]
    assert flip.tolist() == [True, False, False]
    torch.testing.assert_close(drop, torch.tensor([0.4, 0.1, -0.2]))  # negative: masking raised it


def test_masking_counterfactual_rejects_logits_and_shapes() -> None:
    with pytest.raises(ValueError, match="probabilities"):
        masking_counterfactual(torch.tensor([[2.0, -1.0]]), torch.tensor([[0.5, 0.5]]))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        masking_counterfactual(torch.tensor([[0.5, 0.5]]), torch.tensor([[0.2, 0.3, 0.5]]))


def test_flag_reasons() -> None:
    nan = float("nan")
    e_out_tol = torch.tensor([0.9, 0.1, 0.1, nan, 0.6, 0.5])
    flip = torch.tensor([False, True, False, False, True, False])
    no_ev = torch.tensor([False, False, False, True, False, False])
    flagged, reasons = flag(e_out_tol, flip, no_ev, out_threshold=0.5, flag_on_flip=True)
    assert flagged.tolist() == [True, True, False, True, True, False]  # 0.5 is not above 0.5
    assert reasons == [
        ["out_of_lung_energy"],
        ["flip_under_masking"],
        [],
        ["no_evidence"],
        ["out_of_lung_energy", "flip_under_masking"],
        [],
    ]
    flagged, reasons = flag(e_out_tol, flip, no_ev, out_threshold=0.5, flag_on_flip=False)
    assert flagged.tolist() == [True, False, False, True, True, False]
    assert reasons[4] == ["out_of_lung_energy"]
    assert set(REASONS) == {"out_of_lung_energy", "flip_under_masking", "flip_without_markers", "no_evidence"}
    marker_flip = torch.tensor([False, False, True, False, False, False])
    flagged, reasons = flag(e_out_tol, flip, no_ev, 0.5, False, marker_flip)
    assert flagged.tolist() == [True, False, True, True, True, False]
    assert reasons[2] == ["flip_without_markers"]


def test_remove_floor_by_hand() -> None:
    from lungaudit.audit.metrics import remove_floor

    cams = torch.tensor([[[1.0, 1.0], [1.0, 5.0]]])  # mean 2
    assert remove_floor(cams).tolist() == [[[0.0, 0.0], [0.0, 3.0]]]
    with pytest.raises(ValueError):
        remove_floor(cams[0])


def test_fill_from_surroundings_paints_over_a_token() -> None:
    from lungaudit.audit.counterfactual import box_holes, fill_from_surroundings

    x = torch.full((1, 1, 32, 32), 0.3)
    x[0, 0, 2:6, 2:8] = 1.0  # a burned-in token
    holes = box_holes([[(2, 2, 8, 6)]], (32, 32), pad_px=1, device=torch.device("cpu"))
    out = fill_from_surroundings(x, holes)
    assert torch.allclose(out, torch.full_like(x, 0.3))  # token gone, the rest untouched


def test_flag_rejects_bad_input() -> None:
    b = torch.tensor([False])
    with pytest.raises(ValueError, match="out_threshold"):
        flag(torch.tensor([0.2]), b, b, 1.5, True)
    with pytest.raises(ValueError, match="bool"):
        flag(torch.tensor([0.2]), torch.tensor([1]), b, 0.5, True)
    with pytest.raises(ValueError, match=r"\(N,\)"):
        flag(torch.tensor([0.2, 0.3]), b, b, 0.5, True)
