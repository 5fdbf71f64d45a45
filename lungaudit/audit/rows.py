"""From a step's device tensors to typed :class:`~lungaudit.audit.schema.AuditRow` objects.

Only a few scalars per image leave the device here, plus the small S x S heatmap and mask the
marker-overlap test reads.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lungaudit.audit.markers import Box, hotspot_overlaps_marker
from lungaudit.audit.regions import REGION_NAMES
from lungaudit.audit.schema import AuditRow
from lungaudit.audit.step import StepResult
from lungaudit.data.records import Sample


def pick_box(cam: np.ndarray, boxes: Sequence[Box]) -> Box | None:
    """The marker box holding the most heatmap energy (the one a reviewer should be pointed at)."""
    if not boxes:
        return None
    energy = [cam[y0:y1, x0:x1].sum() for x0, y0, x1, y1 in boxes]
    return tuple(int(v) for v in boxes[int(np.argmax(energy))])  # type: ignore[return-value]


def _opt(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def step_rows(
    r: StepResult, samples: Sequence[Sample], keys: Sequence[str], class_names: Sequence[str], trained_on: Sequence[bool]
) -> list[AuditRow]:
    """One row per image of the batch, in batch order; ``keys`` are the images' paths relative to the data root."""
    host = {k: v.cpu().numpy() for k, v in r.energy.items()}
    pf, pm, pc = r.pred_full.cpu().numpy(), r.pred_masked.cpu().numpy(), r.pred_clean.cpu().numpy()
    full, masked = r.probs_full.cpu().numpy(), r.probs_masked.cpu().numpy()
    flip, drop, mflip = r.flip.cpu().numpy(), r.prob_drop.cpu().numpy(), r.marker_flip.cpu().numpy()
    region, flagged, predicted = r.region.cpu().numpy(), r.flagged.cpu().numpy(), r.mask_predicted.cpu().numpy()
    heat, lungs = r.heat.cpu().numpy(), r.lungs.cpu().numpy()
    rows = []
    for j, s in enumerate(samples):
        box = pick_box(heat[j], r.boxes[j])
        rows.append(
            AuditRow(
                key=keys[j], path=str(s.path), label=s.label, source=s.source, split=s.split, trained_on=bool(trained_on[j]),
                mask_source="predicted" if predicted[j] else "given", pred=class_names[pf[j]],
                prob_pred=float(full[j, pf[j]]), pred_masked=class_names[pm[j]], prob_masked=float(masked[j, pf[j]]),
                prob_drop=float(np.clip(drop[j], -1, 1)), flip=bool(flip[j]),
                e_in=_opt(host["e_in"][j]), e_in_tol=_opt(host["e_in_tol"][j]), e_out=_opt(host["e_out"][j]),
                e_out_tol=_opt(host["e_out_tol"][j]), e_in_ratio=_opt(host["e_in_ratio"][j]),
                lung_area=float(host["lung_area"][j]), no_evidence=bool(host["no_evidence"][j]),
                region=REGION_NAMES[region[j]] if region[j] >= 0 else None,
                marker_overlap=hotspot_overlaps_marker(heat[j], lungs[j], r.boxes[j]), marker_box=box,
                pred_without_markers=class_names[pc[j]], marker_flip=bool(mflip[j]), flagged=bool(flagged[j]),
                reasons=tuple(r.reasons[j]), probs={c: float(np.clip(full[j, k], 0, 1)) for k, c in enumerate(class_names)},
            )  # fmt: skip
        )
    return rows
