"""Per-image audit metrics as small pure torch functions over a batch.

Shapes are stated in each docstring; bad input raises ``ValueError`` before any work. Nothing here
moves tensors off their device except :func:`flag`'s human-readable reasons.

Definitions (DESIGN.md, "Audit definitions"): heatmap H >= 0 upsampled to the image, lung mask M binary,
E_in = sum(H*M) / sum(H) (the energy-based pointing game), E_out = 1 - E_in, lung area A = mean(M).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

REASONS: tuple[str, ...] = ("out_of_lung_energy", "flip_under_masking", "flip_without_markers", "no_evidence")


def _check_maps(cams: torch.Tensor, masks: torch.Tensor) -> None:
    if cams.ndim != 3:
        raise ValueError(f"cams must be (N, H, W), got shape {tuple(cams.shape)}")
    if masks.shape != cams.shape:
        raise ValueError(f"masks {tuple(masks.shape)} must have the same (N, H, W) shape as cams {tuple(cams.shape)}")
    if not cams.is_floating_point():
        raise ValueError(f"cams must be floating point, got {cams.dtype}")
    # Two reductions instead of four full-size masks: any NaN/inf makes the sum non-finite.
    if cams.numel() and (not bool(torch.isfinite(cams.sum())) or bool(cams.amin() < 0)):
        raise ValueError("cams must be finite and non-negative (ReLU'd heatmaps)")
    if masks.dtype != torch.bool and bool(((masks != 0) & (masks != 1)).any()):
        raise ValueError("masks must be binary (bool or 0/1)")


def dilate_masks(masks: torch.Tensor, tolerance_px: int) -> torch.Tensor:
    """(N, H, W) binary -> (N, H, W) float {0,1} dilated by a (2t+1)x(2t+1) square (Chebyshev radius t)."""
    if not isinstance(tolerance_px, int) or isinstance(tolerance_px, bool) or tolerance_px < 0:
        raise ValueError(f"tolerance_px must be a non-negative int, got {tolerance_px!r}")
    m = masks.float()
    if tolerance_px == 0:
        return m
    # A square structuring element is separable: a row pass then a column pass costs 2k, not k^2.
    k = 2 * tolerance_px + 1
    rows = F.max_pool2d(m[:, None], kernel_size=(1, k), stride=1, padding=(0, tolerance_px))
    return F.max_pool2d(rows, kernel_size=(k, 1), stride=1, padding=(tolerance_px, 0))[:, 0]


def lung_only(x: torch.Tensor, lungs: torch.Tensor, dilate_px: int, fill_value: float) -> torch.Tensor:
    """(N, C, H, W) input with everything outside the lungs dilated by ``dilate_px`` set to ``fill_value``:
    the lung-masked input as the classifier was trained on it (the masking counterfactual's input)."""
    gate = dilate_masks(lungs, dilate_px)[:, None] > 0
    return torch.where(gate, x, torch.full_like(x, fill_value))


def tolerant_lungs(masks: torch.Tensor, tolerance_px: int, fill: bool = False) -> torch.Tensor:
    """(N, H, W) binary -> (N, H, W) float {0,1}: the region the tolerant E_in counts as lung.

    ``fill``: each lung's holes and bites first (:func:`~lungaudit.audit.lungs.fill_lungs`), so
    tissue the segmenter left out (a consolidation at the edge) is not "outside the lungs".
    """
    from lungaudit.audit.lungs import fill_lungs

    return dilate_masks(fill_lungs(masks) if fill else masks, tolerance_px)


def lung_energy(cams: torch.Tensor, masks: torch.Tensor, tolerance_px: int, *, fill: bool = False) -> dict[str, torch.Tensor]:
    """Share of heatmap energy inside the lungs, strict and tolerant.

    Args:
        cams: (N, H, W) float, non-negative heatmaps at image resolution.
        masks: (N, H, W) lung masks, bool or 0/1.
        tolerance_px: radius of the square dilation of M for the tolerant variant (CAMs are coarse).
        fill: the tolerant variant fills each lung's holes and bites before dilating (see
            :func:`tolerant_lungs`); the strict E_in always uses M as given.

    Returns:
        dict of (N,) tensors: ``e_in``, ``e_out`` (strict), ``e_in_tol``, ``e_out_tol`` (M dilated),
        ``lung_area`` (A = mean M), ``e_in_ratio`` (E_in / A; above 1 when energy concentrates in the
        lungs; NaN when A = 0), ``no_evidence`` (bool, sum H == 0). Where ``no_evidence`` is True, all
        energies are NaN -- never a silent 0 or 1.
    """
    _check_maps(cams, masks)
    h = cams.float()
    m = masks.float()
    m_tol = tolerant_lungs(masks, tolerance_px, fill)
    total = h.sum((1, 2))
    no_evidence = total == 0
    nan = torch.full_like(total, float("nan"))
    # where(), not a clamp on the denominator, so that an all-zero map is NaN and not 0.
    safe = torch.where(no_evidence, torch.ones_like(total), total)
    e_in = torch.where(no_evidence, nan, ((h * m).sum((1, 2)) / safe).clamp(0.0, 1.0))
    e_in_tol = torch.where(no_evidence, nan, ((h * m_tol).sum((1, 2)) / safe).clamp(0.0, 1.0))
    area = m.mean((1, 2))
    ratio = torch.where(area > 0, e_in / area.clamp_min(1e-12), nan)
    return {
        "e_in": e_in,
        "e_out": 1.0 - e_in,
        "e_in_tol": e_in_tol,
        "e_out_tol": 1.0 - e_in_tol,
        "lung_area": area,
        "e_in_ratio": ratio,
        "no_evidence": no_evidence,
    }


class Counterfactual(NamedTuple):
    """Output of :func:`masking_counterfactual`; all (N,)."""

    pred_full: torch.Tensor  # int64, argmax on the full image
    pred_masked: torch.Tensor  # int64, argmax on the lung-masked image
    flip: torch.Tensor  # bool, pred_masked != pred_full
    prob_drop: torch.Tensor  # float, p_full[pred_full] - p_masked[pred_full]; negative when masking raises it


def masking_counterfactual(probs_full: torch.Tensor, probs_masked: torch.Tensor) -> Counterfactual:
    """Compare predictions on the full and the lung-masked image.

    Args:
        probs_full, probs_masked: (N, C) class probabilities (rows in [0, 1] summing to 1, e.g. softmax).
            Logits are rejected: their "drop" would be meaningless.
    """
    if probs_full.ndim != 2 or probs_full.shape != probs_masked.shape:
        raise ValueError(
            f"probs_full {tuple(probs_full.shape)} and probs_masked {tuple(probs_masked.shape)} must both be (N, C)"
        )
    for name, p in (("probs_full", probs_full), ("probs_masked", probs_masked)):
        if not p.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {p.dtype}")
        pf = p.float()
        if bool((~torch.isfinite(pf)).any() | (pf < 0).any() | (pf > 1).any()) or bool(
            ((pf.sum(1) - 1).abs() > 1e-3).any()
        ):
            raise ValueError(f"{name} must hold probabilities (rows in [0, 1] summing to 1), not logits")
    pred_full = probs_full.argmax(1)
    pred_masked = probs_masked.argmax(1)
    idx = pred_full[:, None]
    drop = (probs_full.gather(1, idx) - probs_masked.gather(1, idx))[:, 0]
    return Counterfactual(pred_full, pred_masked, pred_full != pred_masked, drop)


def flag(
    e_out_tol: torch.Tensor,
    flip: torch.Tensor,
    no_evidence: torch.Tensor,
    out_threshold: float,
    flag_on_flip: bool,
    marker_flip: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[list[str]]]:
    """Flag images and say why.

    Args:
        e_out_tol: (N,) tolerant out-of-lung energy (NaN where there is no evidence).
        flip: (N,) bool, prediction changed under lung masking.
        no_evidence: (N,) bool, the heatmap is all zero.
        out_threshold: flag when ``e_out_tol > out_threshold``; in [0, 1].
        flag_on_flip: whether a masking flip alone flags.
        marker_flip: (N,) bool, prediction changed when the probable burned-in markers were
            painted over with their surroundings (None: not measured).

    Returns:
        ``flagged`` (N,) bool on the input device, and per image the list of reasons, in the order
        of :data:`REASONS`. An image without evidence cannot be audited, so it is flagged for a
        person to look at.
    """
    if e_out_tol.ndim != 1 or flip.shape != e_out_tol.shape or no_evidence.shape != e_out_tol.shape:
        raise ValueError(
            f"e_out_tol {tuple(e_out_tol.shape)}, flip {tuple(flip.shape)} and no_evidence "
            f"{tuple(no_evidence.shape)} must all be (N,)"
        )
    if marker_flip is None:
        marker_flip = torch.zeros_like(flip)
    if marker_flip.shape != flip.shape:
        raise ValueError(f"marker_flip {tuple(marker_flip.shape)} must be (N,) like flip")
    if flip.dtype != torch.bool or no_evidence.dtype != torch.bool or marker_flip.dtype != torch.bool:
        raise ValueError(f"flip, marker_flip and no_evidence must be bool, got {flip.dtype}, {marker_flip.dtype}, {no_evidence.dtype}")
    if not 0.0 <= float(out_threshold) <= 1.0:
        raise ValueError(f"out_threshold must lie in [0, 1], got {out_threshold}")
    out = (e_out_tol > out_threshold) & ~no_evidence  # NaN compares False, but be explicit
    flipped = flip & bool(flag_on_flip)
    flagged = out | flipped | marker_flip | no_evidence
    table = torch.stack([out, flipped, marker_flip, no_evidence], 1).cpu().tolist()
    reasons = [[name for name, on in zip(REASONS, row) if on] for row in table]
    return flagged, reasons


def remove_floor(cams: torch.Tensor) -> torch.Tensor:
    """ReLU(H - mean(H)) per image: (N, H, W) -> (N, H, W), still non-negative.

    Grad-CAM maps carry a diffuse positive floor over the whole image. Counted as energy, that floor
    lands outside the lungs in proportion to the outside *area* (about three quarters of a chest
    film), which drowns the hotspots that matter: on the marker benchmark it lowered the AUROC of
    E_out for shortcut-reliant predictions from 0.92 to 0.81 (BENCHMARKS.md, "Audit validity").
    """
    if cams.ndim != 3:
        raise ValueError(f"cams must be (N, H, W), got shape {tuple(cams.shape)}")
    return F.relu(cams - cams.mean(dim=(1, 2), keepdim=True))


__all__ = ["REASONS", "Counterfactual", "dilate_masks", "flag", "lung_energy", "lung_only", "masking_counterfactual", "remove_floor"]
