"""Dataset-level aggregates of an audit: per class, per source, regions, reasons, accuracy.

Input is typed :class:`~lungaudit.audit.schema.AuditRow` objects; output is the part of
:class:`~lungaudit.audit.schema.Summary` that is computed from rows (the writer adds provenance).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from lungaudit.audit.schema import REASONS, AuditRow, GroupStats
from lungaudit.classification.metrics import classification_report
from lungaudit.utils import atomic_write_png, safe_filename

HIST_BINS = np.linspace(0.0, 1.0, 21)


def _mean(values: Iterable[float | None]) -> float | None:
    x = np.array([v for v in values if v is not None], dtype=np.float64)
    return float(x.mean()) if x.size else None


def group_stats(rows: Sequence[AuditRow]) -> GroupStats:
    """n, flag/flip/marker-flip rates, mean strict/tolerant E_in and (where labelled) accuracy of ``rows``."""
    if not rows:
        return GroupStats(n=0, flag_rate=None, marker_flip_rate=None, mean_e_in=None, mean_e_in_tol=None, flip_rate=None, accuracy=None)
    labelled = [r for r in rows if r.label]
    return GroupStats(
        n=len(rows),
        flag_rate=float(np.mean([r.flagged for r in rows])),
        marker_flip_rate=float(np.mean([r.marker_flip for r in rows])),
        mean_e_in=_mean(r.e_in for r in rows),
        mean_e_in_tol=_mean(r.e_in_tol for r in rows),
        flip_rate=float(np.mean([r.flip for r in rows])),
        accuracy=float(np.mean([r.pred == r.label for r in labelled])) if labelled else None,
        trained_on=sum(r.trained_on for r in rows),
    )


def _by(rows: Sequence[AuditRow], key: str, order: Sequence[str] | None = None) -> dict[str, GroupStats]:
    groups: dict[str, list[AuditRow]] = {}
    for r in rows:
        value = getattr(r, key)
        if value:
            groups.setdefault(value, []).append(r)
    names = [n for n in order if n in groups] if order else sorted(groups)
    return {n: group_stats(groups[n]) for n in names}


def _tally(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def aggregate_rows(rows: Sequence[AuditRow], class_names: Sequence[str]) -> dict[str, Any]:
    """The ``counts``/``overall``/``per_*``/``regions``/``reasons``/``metrics``/histogram blocks of a summary.

    ``counts`` lacks ``images`` and ``problems``, which only the writer knows.
    """
    labelled = [r for r in rows if r.label]
    metrics = None
    if labelled:
        index = {c: i for i, c in enumerate(class_names)}
        y = np.array([index[r.label] for r in labelled])  # type: ignore[index]
        probs = np.array([[r.probs.get(c, np.nan) for c in class_names] for r in labelled], dtype=np.float64)
        metrics = classification_report(y, probs, list(class_names))
    e_in = np.array([r.e_in for r in rows if r.e_in is not None], dtype=np.float64)
    hist, _ = np.histogram(e_in, bins=HIST_BINS)
    return {
        "counts": {
            "audited": len(rows),
            "flagged": sum(r.flagged for r in rows),
            "no_evidence": sum(r.no_evidence for r in rows),
            "labelled": len(labelled),
            "trained_on": sum(r.trained_on for r in rows),
        },
        "overall": group_stats(rows),
        "per_class": _by(rows, "label" if labelled else "pred", class_names),
        "per_predicted_class": _by(rows, "pred", class_names),
        "per_source": _by(rows, "source"),
        "regions": _tally(r.region for r in rows if r.flagged and r.region),
        "reasons": dict.fromkeys(REASONS, 0) | _tally(x for r in rows for x in r.reasons),
        "metrics": metrics,
        "e_in_histogram": {"bins": HIST_BINS.round(4).tolist(), "counts": hist.tolist()},
    }


def mean_outside_name(index: int, class_name: str) -> str:
    """File name of one class's mean heatmap: indexed, with the class name made safe, never a path."""
    return f"mean_outside_{index:02d}_{safe_filename(class_name, 40)}.png"


def write_mean_outside(out_dir: Path, class_names: Sequence[str], sums: np.ndarray, counts: np.ndarray, side: int = 256) -> dict[str, str]:
    """One ``mean_outside_*.png`` per predicted class from summed unit-energy heatmaps; returns class -> file.

    Args:
        sums: (C, S, S) per-class sum of out-of-lung heatmaps, each scaled to unit total energy.
        counts: (C,) images per predicted class.
    """
    written: dict[str, str] = {}
    if sums is None or counts.sum() == 0:
        return written
    # Left panel: the class's mean out-of-lung heatmap, one colour scale for all classes so a class
    # whose heatmaps leave the lungs more looks hotter. Right panel: what is specific to the class,
    # its excess over the all-class mean; anatomy every class spills onto (heart, diaphragm)
    # cancels there, and a class-correlated corner token stands out. Each right panel has its own
    # scale: a token that one class leans on less than another (a weaker shortcut) must still show.
    means = sums / np.maximum(counts, 1)[:, None, None]
    overall = sums.sum(0) / max(counts.sum(), 1)
    excess = np.maximum(means - overall, 0)
    vmax = max(float(means.max()), 1e-12)
    for k, name in enumerate(class_names):
        if counts[k] == 0:
            continue
        panels = []
        emax = max(float(excess[k].max()), 1e-12)
        for img, top, caption in ((means[k], vmax, f"{name[:24]} (n={int(counts[k])})"), (excess[k], emax, "excess over others")):
            small = cv2.resize((img / top * 255).astype(np.uint8), (side, side), interpolation=cv2.INTER_LINEAR)
            colored = cv2.applyColorMap(small, cv2.COLORMAP_INFERNO)
            cv2.putText(colored, _ascii(caption), (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
            panels.append(colored)
        fname = mean_outside_name(k, name)
        atomic_write_png(out_dir / fname, np.hstack([panels[0], np.full((side, 4, 3), 255, np.uint8), panels[1]]))
        written[name] = fname
    return written


def _ascii(text: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only; anything else would come out as question marks."""
    return text.encode("ascii", "replace").decode("ascii")
