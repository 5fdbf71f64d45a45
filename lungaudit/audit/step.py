"""One audit step: a decoded batch in, typed per-image results out. No files, no state.

Per batch, on the device: lung masks (given, else the run's U-Net) -> one CAM pass that also yields
the full-image logits -> one forward on the lung-masked image -> one forward with the detected
markers painted over -> batched metrics, regions and flags. The audit, ``predict`` and ``serve`` all
run this same function, so a prediction is audited the same way whichever door it came in by.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from lungaudit.audit.counterfactual import box_holes, fill_from_surroundings
from lungaudit.audit.markers import Box
from lungaudit.audit.metrics import dilate_masks, flag, lung_energy, lung_only, masking_counterfactual, remove_floor, tolerant_lungs
from lungaudit.audit.regions import dominant_region
from lungaudit.config import AuditConfig
from lungaudit.device import autocast
from lungaudit.explain.cam import CAM_METHODS, CAM_SCORES, CamResult, build_method, compute_cam, method_info
from lungaudit.runs.restore import TrainedModels
from lungaudit.segmentation.predict import segment_batch

log = logging.getLogger(__name__)

CAM_FLOORS: tuple[str, ...] = ("auto", "mean", "none")

# The floor ``audit.cam_floor: auto`` removes, by the method's kind (MethodInfo.kind). Why, per kind,
# and the validity figures behind it: BENCHMARKS.md, "Explanation methods: audit validity".
KIND_FLOORS: dict[str, str] = {
    # Layer CAMs are coarse and carry a diffuse positive floor over the whole film; counted as
    # energy it lands outside the lungs in proportion to the outside area (remove_floor's docstring).
    "cam": "mean",
    "gradient": "mean",
    "perturbation": "mean",
}


def resolve_floor(setting: str, method: str) -> str:
    """``mean`` or ``none``: ``auto`` becomes the floor of the method's kind (:data:`KIND_FLOORS`)."""
    if setting not in CAM_FLOORS:
        raise ValueError(f"audit.cam_floor must be one of {', '.join(CAM_FLOORS)}, got {setting!r}")
    return KIND_FLOORS[method_info(method).kind] if setting == "auto" else setting


def apply_floor(cams: torch.Tensor, floor: str) -> torch.Tensor:
    """(N, H, W) maps >= 0 with the resolved floor (``mean`` or ``none``) removed."""
    return remove_floor(cams) if floor == "mean" else cams


@dataclass(frozen=True)
class StepSettings:
    """Everything a step needs to know, resolved once from the audit config and the run's models."""

    size: int  # classifier input side; masks and heatmaps are compared at this resolution
    cam: str
    target_layer: str
    cam_score: str
    cam_floor: str  # resolved: mean | none
    tolerance_px: int  # at ``size``
    fill_lungs: bool  # tolerant E_in fills each lung's holes and bites first
    border_frac: float
    out_threshold: float
    flag_on_flip: bool
    marker_counterfactual: bool
    mask_dilate_px: int  # the classifier's own training-time masking
    fill_value: float
    seg_size: int | None
    cam_options: dict[str, Any] = field(default_factory=dict)  # the method's keyword options

    @classmethod
    def resolve(cls, cfg: AuditConfig, models: TrainedModels) -> StepSettings:
        """Check the audit config against the registries and the run; raises ValueError naming the key."""
        if cfg.cam not in CAM_METHODS:
            raise ValueError(f"audit.cam must be one of {', '.join(CAM_METHODS.names())}, got {cfg.cam!r}")
        if cfg.cam_score not in CAM_SCORES:
            raise ValueError(f"audit.cam_score must be one of {', '.join(CAM_SCORES.names())}, got {cfg.cam_score!r}")
        try:
            build_method(cfg.cam, cfg.cam_options)  # options fail here, before any image is read
        except ValueError as e:
            raise ValueError(f"audit.cam_options: {e}") from None
        _warn_if_failed_sanity(cfg.cam)
        size = models.cls_cfg.image_size
        return cls(
            size=size, cam=cfg.cam, target_layer=cfg.target_layer, cam_score=cfg.cam_score,
            cam_floor=resolve_floor(cfg.cam_floor, cfg.cam), cam_options=dict(cfg.cam_options),
            tolerance_px=max(1, round(cfg.tolerance_px * size / 128)), fill_lungs=cfg.fill_lungs, border_frac=cfg.border_frac,
            out_threshold=cfg.out_threshold, flag_on_flip=resolve_flag_on_flip(cfg.flag_on_flip, models.cls_cfg.mask_prob),
            marker_counterfactual=cfg.marker_counterfactual, mask_dilate_px=models.cls_cfg.mask_dilate_px,
            fill_value=models.cls_cfg.fill_value, seg_size=models.seg_cfg.image_size if models.seg_cfg else None,
        )  # fmt: skip


def _warn_if_failed_sanity(method: str) -> None:
    """A method whose recorded sanity verdict is 'fail' still runs, with a warning saying so."""
    info = method_info(method)
    if info.sanity == "fail":
        log.warning("audit.cam=%s failed the recorded sanity checks (%s); its maps may show the input, not the model",
                    method, info.sanity_note or "see lungaudit explain --list")  # fmt: skip


def resolve_flag_on_flip(setting: str | bool, mask_prob: float) -> bool:
    """``auto``: a masking flip is evidence only if the model saw masked images in training.

    A model trained with ``mask_prob=0`` has never seen a lung-masked film; its prediction on one is
    out of distribution, so a flip there says nothing about shortcuts (on the marker benchmark such
    a model flipped on 76% of test images, against 21% that truly relied on the marker).
    """
    value = str(setting).strip().lower()
    if value == "auto":
        return mask_prob > 0
    if value in ("true", "yes", "on", "1"):
        return True
    if value in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"audit.flag_on_flip must be auto, true or false, got {setting!r}")


@dataclass
class StepResult:
    """Per-image results of one batch; tensors on the device, (N,) unless stated."""

    probs_full: torch.Tensor  # (N, C)
    probs_masked: torch.Tensor  # (N, C)
    pred_full: torch.Tensor
    pred_masked: torch.Tensor
    flip: torch.Tensor
    prob_drop: torch.Tensor
    energy: dict[str, torch.Tensor]  # see audit.metrics.lung_energy
    region: torch.Tensor  # index into REGION_NAMES, -1 when no energy is outside
    pred_clean: torch.Tensor  # prediction with the detected markers painted over
    marker_flip: torch.Tensor
    flagged: torch.Tensor
    reasons: list[list[str]]
    heat: torch.Tensor  # (N, S, S) the heatmaps the energies were measured on
    lungs: torch.Tensor  # (N, S, S) bool
    mask_predicted: torch.Tensor  # bool: the U-Net made this image's mask
    boxes: list[list[Box]]  # marker boxes outside the lungs, at S x S


def lung_masks(models: TrainedModels, x: torch.Tensor, masks: torch.Tensor, has_mask: torch.Tensor, seg_size: int | None) -> torch.Tensor:
    """(N, S, S) bool: the given mask where there is one, the run's U-Net's elsewhere."""
    lungs = masks[:, 0] > 0.5
    need = ~has_mask
    if bool(need.any()):
        if models.segmenter is None or seg_size is None:
            raise ValueError(f"{int(need.sum())} image(s) need a predicted lung mask but the run has no segmenter")
        lungs[need] = segment_batch(models.segmenter, x[need], seg_size)
    return lungs


@torch.no_grad()
def _predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with autocast(x.device):
        return torch.softmax(model(x).float(), 1)


def _outside_lungs(boxes: Sequence[Box], lungs: np.ndarray, max_overlap: float = 0.1) -> list[Box]:
    """Boxes that do not sit mainly on the lungs of the final mask (known only now for predicted masks)."""
    return [b for b in boxes if lungs[b[1] : b[3], b[0] : b[2]].mean() <= max_overlap]


def _without_markers(model: torch.nn.Module, x: torch.Tensor, lungs: torch.Tensor, boxes: list[list[Box]], pred: torch.Tensor) -> torch.Tensor:
    """Predictions with each image's marker boxes painted over by their surroundings (pred where none)."""
    clean = pred.clone()
    if not any(boxes):
        return clean
    holes = box_holes(boxes, tuple(x.shape[-2:]), 3, x.device) * (1 - dilate_masks(lungs, 2))
    has = holes.flatten(1).amax(1) > 0
    if bool(has.any()):
        clean[has] = _predict(model, fill_from_surroundings(x[has], holes[has])).argmax(1)
    return clean


def audit_step(
    models: TrainedModels, x: torch.Tensor, masks: torch.Tensor, has_mask: torch.Tensor, boxes: list[list[Box]], s: StepSettings,
    cam: CamResult | None = None,
) -> StepResult:  # fmt: skip
    """Audit one batch.

    Args:
        x: (N, 1, S, S) float in [0, 1] on the device; masks: (N, 1, S, S) {0,1}; has_mask: (N,) bool
            on the device; boxes: per image, probable marker boxes at S x S (from the loader).
        cam: the audited method's result on ``x`` (predicted classes, ``s.cam_score``, S x S) when the
            caller already has it (see :meth:`lungaudit.services.predict.Predictor.run`); computed here otherwise.
    """
    lungs = lung_masks(models, x, masks, has_mask, s.seg_size)
    if cam is None:
        cam = compute_cam(models.classifier, x, s.target_layer, method=s.cam, out_size=(s.size, s.size), score=s.cam_score,
                          options=s.cam_options)  # fmt: skip
    heat = apply_floor(cam.cams, s.cam_floor)
    probs_full = torch.softmax(cam.logits.float(), 1)
    probs_masked = _predict(models.classifier, lung_only(x, lungs, s.mask_dilate_px, s.fill_value))
    energy = lung_energy(heat, lungs, s.tolerance_px, fill=s.fill_lungs)
    cf = masking_counterfactual(probs_full, probs_masked)
    region, _ = dominant_region(heat, lungs, s.border_frac, s.tolerance_px, fill=s.fill_lungs)
    lungs_np = lungs.cpu().numpy()
    kept = [_outside_lungs(b, m) for b, m in zip(boxes, lungs_np)]
    pred_clean = _without_markers(models.classifier, x, lungs, kept, cf.pred_full) if s.marker_counterfactual else cf.pred_full.clone()
    marker_flip = pred_clean != cf.pred_full
    flagged, reasons = flag(energy["e_out_tol"], cf.flip, energy["no_evidence"], s.out_threshold, s.flag_on_flip,
                            marker_flip if s.marker_counterfactual else None)  # fmt: skip
    return StepResult(
        probs_full=probs_full, probs_masked=probs_masked, pred_full=cf.pred_full, pred_masked=cf.pred_masked,
        flip=cf.flip, prob_drop=cf.prob_drop, energy=energy, region=region, pred_clean=pred_clean,
        marker_flip=marker_flip, flagged=flagged, reasons=reasons, heat=heat, lungs=lungs, mask_predicted=~has_mask,
        boxes=kept,
    )  # fmt: skip


def outside_unit_maps(r: StepResult, tolerance_px: int, fill: bool = False) -> torch.Tensor:
    """(N, S, S) out-of-lung heatmaps scaled to unit total energy, for the per-class mean heatmaps.

    Unit scaling makes every image weigh the same, whatever its raw gradient magnitude.
    """
    outside = r.heat * (1 - tolerant_lungs(r.lungs, tolerance_px, fill))
    return outside / r.heat.sum((1, 2), keepdim=True).clamp_min(1e-12)


__all__ = ["CAM_FLOORS", "KIND_FLOORS", "StepResult", "apply_floor", "resolve_floor", "StepSettings", "audit_step", "lung_masks", "outside_unit_maps", "resolve_flag_on_flip"]
