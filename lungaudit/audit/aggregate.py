"""Dataset-level aggregates of an audit: per class, per source, regions, reasons, accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lungaudit.audit.metrics import REASONS
from lungaudit.classification.metrics import classification_report
from lungaudit.utils import atomic_write_png

HIST_BINS = np.linspace(0.0, 1.0, 21)


def _f(v: str) -> float:
    return float(v) if v not in ("", None) else float("nan")


def _b(v: str) -> bool:
    return v == "true"


def _nanmean(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else None


def group_stats(rows: list[dict[str, str]]) -> dict[str, Any]:
    """n, flag rate, mean strict/tolerant E_in, flip rate and (where labelled) accuracy of ``rows``."""
    if not rows:
        return {"n": 0, "marker_flip_rate": None, "flag_rate": None, "mean_e_in": None, "mean_e_in_tol": None, "flip_rate": None, "accuracy": None}
    labelled = [r for r in rows if r["label"]]
    return {
        "n": len(rows),
        "marker_flip_rate": float(np.mean([_b(r["marker_flip"]) for r in rows])),
        "flag_rate": float(np.mean([_b(r["flagged"]) for r in rows])),
        "mean_e_in": _nanmean(np.array([_f(r["e_in"]) for r in rows])),
        "mean_e_in_tol": _nanmean(np.array([_f(r["e_in_tol"]) for r in rows])),
        "flip_rate": float(np.mean([_b(r["flip"]) for r in rows])),
        "accuracy": float(np.mean([r["pred"] == r["label"] for r in labelled])) if labelled else None,
    }


def _by(rows: list[dict[str, str]], key: str, order: list[str] | None = None) -> dict[str, Any]:
    groups: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        if r[key]:
            groups.setdefault(r[key], []).append(r)
    names = [n for n in order if n in groups] if order else sorted(groups)
    return {n: group_stats(groups[n]) for n in names}


def aggregate_rows(rows: list[dict[str, str]], class_names: list[str]) -> dict[str, Any]:
    """The ``counts``/``overall``/``per_*``/``regions``/``reasons``/``metrics`` blocks of summary.json."""
    labelled = [r for r in rows if r["label"]]
    e_in = np.array([_f(r["e_in"]) for r in rows])
    reasons: dict[str, int] = dict.fromkeys(REASONS, 0)
    for r in rows:
        for reason in filter(None, r["reasons"].split(";")):
            reasons[reason] = reasons.get(reason, 0) + 1
    regions: dict[str, int] = {}
    for r in rows:
        if _b(r["flagged"]) and r["region"]:
            regions[r["region"]] = regions.get(r["region"], 0) + 1
    metrics = None
    if labelled:
        index = {c: i for i, c in enumerate(class_names)}
        y = np.array([index[r["label"]] for r in labelled])
        probs = np.array([[_f(r[f"p_{c}"]) for c in class_names] for r in labelled])
        metrics = classification_report(y, probs, class_names)
    counts, _ = np.histogram(e_in[np.isfinite(e_in)], bins=HIST_BINS)
    return {
        "counts": {
            "audited": len(rows),
            "flagged": sum(_b(r["flagged"]) for r in rows),
            "no_evidence": sum(_b(r["no_evidence"]) for r in rows),
            "labelled": len(labelled),
        },
        "overall": group_stats(rows),
        "per_class": _by(rows, "label" if labelled else "pred", class_names),
        "per_predicted_class": _by(rows, "pred", class_names),
        "per_source": _by(rows, "source"),
        "regions": regions,
        "reasons": reasons,
        "metrics": metrics,
        "e_in_histogram": {"bins": HIST_BINS.round(4).tolist(), "counts": counts.tolist()},
    }


def write_mean_outside(out_dir: Path, class_names: list[str], side: int = 256) -> dict[str, str]:
    """``mean_outside_<class>.png`` per predicted class from the chunk partials; returns name -> file."""
    sums, counts = None, None
    for part in sorted((out_dir / "partials").glob("*.npz")):
        data = np.load(part)
        sums = data["sums"] if sums is None else sums + data["sums"]
        counts = data["counts"] if counts is None else counts + data["counts"]
    written: dict[str, str] = {}
    if sums is None:
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
        for img, top, caption in ((means[k], vmax, f"{name} (n={int(counts[k])})"), (excess[k], emax, "excess over others")):
            small = cv2.resize((img / top * 255).astype(np.uint8), (side, side), interpolation=cv2.INTER_LINEAR)
            colored = cv2.applyColorMap(small, cv2.COLORMAP_INFERNO)
            cv2.putText(colored, caption, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
            panels.append(colored)
        fname = f"mean_outside_{name}.png"
        atomic_write_png(out_dir / fname, np.hstack([panels[0], np.full((side, 4, 3), 255, np.uint8), panels[1]]))
        written[name] = fname
    return written
