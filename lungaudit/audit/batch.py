"""Audit a batch of prepared images: the one call the audit, ``predict`` and ``serve`` share.

An item is what :func:`~lungaudit.audit.loader.prepare_decoded` returns (the audit's DataLoader
batches them itself; ``serve`` collates the uploads its micro-batcher gathered). Everything after
decoding -- masks, CAM, counterfactuals, flags -- is :func:`~lungaudit.audit.step.audit_step`, so a
prediction is audited the same way whichever door it came in by.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from lungaudit.audit.loader import valid_boxes
from lungaudit.audit.step import StepResult, StepSettings, audit_step
from lungaudit.device import to_device
from lungaudit.explain.cam import CamResult
from lungaudit.runs.restore import TrainedModels

TENSOR_KEYS: tuple[str, ...] = ("image", "mask", "boxes")


def collate_items(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack prepared items into a batch like the audit's DataLoader does (``has_mask`` a bool tensor)."""
    if not items:
        raise ValueError("no images to collate")
    batch = {k: torch.stack([it[k] for it in items]) for k in TENSOR_KEYS}
    batch["has_mask"] = torch.tensor([bool(it["has_mask"]) for it in items])
    return batch


def audit_batch(
    models: TrainedModels, batch: dict[str, torch.Tensor], settings: StepSettings, device: torch.device, cam: CamResult | None = None
) -> StepResult:
    """Move a collated batch to ``device`` and run :func:`audit_step` on it.

    Args:
        batch: ``image`` (N, 1, S, S) float in [0, 1], ``mask`` (N, 1, S, S), ``has_mask`` (N,) bool,
            ``boxes`` (N, MAX_BOXES, 4) padded with -1 rows; all on the CPU.
        cam: the audited map when the caller has it already (see :func:`audit_step`).
    """
    x = to_device(batch["image"], device)
    return audit_step(
        models, x, batch["mask"].to(device), batch["has_mask"].to(device), valid_boxes(batch["boxes"]), settings, cam
    )


__all__ = ["TENSOR_KEYS", "audit_batch", "collate_items"]
