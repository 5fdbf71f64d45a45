"""A fixture factory that writes a small but schema-valid audit directory.

The real ``lungaudit audit`` is not needed: the report stage only depends on the files' schema.
"""

from __future__ import annotations

import copy
import csv
import json
import zlib
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pytest

from lungaudit.report.auditdir import AUDIT_COLUMNS

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
SOURCES = ["source-A", "source-B"]
REGIONS = ["border", "above", "below", "lateral", "mediastinum"]


def _png(path: Path, seed: int, size: int = 24) -> None:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def _stats(rows: list[dict[str, Any]], labeled: bool) -> dict[str, Any]:
    n = len(rows)
    if n == 0:
        return {"n": 0, "flag_rate": None, "mean_e_in": None, "flip_rate": None, "accuracy": None}
    ein = [r["e_in"] for r in rows if r["e_in"] is not None]
    return {
        "n": n,
        "flag_rate": sum(r["flagged"] for r in rows) / n,
        "mean_e_in": float(np.mean(ein)) if ein else None,
        "flip_rate": sum(r["flip"] for r in rows) / n,
        "accuracy": (sum(r["pred"] == r["label"] for r in rows) / n) if labeled else None,
    }


def build_rows(n: int, labeled: bool, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = CLASSES[i % len(CLASSES)]
        pred = label if rng.random() < 0.75 else CLASSES[(i + 1) % len(CLASSES)]
        no_ev = i == 3  # one no-evidence image
        e_in = None if no_ev else float(rng.uniform(0.1, 0.95))
        e_in_tol = None if no_ev else min(1.0, e_in + 0.05)
        flip = bool(rng.random() < 0.2)
        out_flag = e_in_tol is not None and (1 - e_in_tol) > 0.5
        reasons = []
        if out_flag:
            reasons.append("out_of_lung_energy")
        if flip:
            reasons.append("flip_under_masking")
        if no_ev:
            reasons.append("no_evidence")
        flagged = bool(reasons)
        region = REGIONS[i % len(REGIONS)] if (flagged and not no_ev) else None
        probs = rng.dirichlet(np.ones(len(CLASSES)))
        rows.append(
            {
                "key": f"/data/set/{label}/images/img_{i:03d}, x.png",  # a comma: CSV quoting is exercised
                "path": f"/data/set/{label}/images/img_{i:03d}, x.png",
                "label": label if labeled else None,
                "source": SOURCES[i % 2] if labeled else None,
                "split": "test",
                "mask_source": "given",
                "pred": pred,
                "prob_pred": float(probs.max()),
                "pred_masked": pred if not flip else CLASSES[(CLASSES.index(pred) + 1) % 4],
                "prob_masked": float(probs.max() * 0.8),
                "prob_drop": float(probs.max() * 0.2),
                "flip": flip,
                "e_in": e_in,
                "e_in_tol": e_in_tol,
                "e_out": None if e_in is None else 1 - e_in,
                "e_out_tol": None if e_in_tol is None else 1 - e_in_tol,
                "e_in_ratio": None if e_in is None else e_in / 0.3,
                "lung_area": 0.3,
                "no_evidence": no_ev,
                "region": region,
                "marker_overlap": bool(region == "border"),
                "marker_box": "2 3 10 12" if region == "border" else None,
                "pred_without_markers": pred,
                "marker_flip": False,
                "flagged": flagged,
                "reasons": reasons,
                "overlay": f"overlays/img_{i:03d}.png" if flagged else None,
                "probs": probs,
            }
        )
    return rows


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return ";".join(v)
    return str(v)


def write_audit_dir(
    root: Path,
    *,
    n: int = 24,
    labeled: bool = True,
    seed: int = 0,
    fingerprint: str = "f" * 64,
    mutate: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Write ``root`` as an audit dir; ``mutate(summary)`` may edit the summary before it is saved."""
    root.mkdir(parents=True, exist_ok=True)
    rows = build_rows(n, labeled, seed)
    header = list(AUDIT_COLUMNS) + [f"p_{c}" for c in CLASSES]
    with open(root / "audit.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow([_cell(r[c]) for c in AUDIT_COLUMNS] + [str(float(p)) for p in r["probs"]])
            if r["overlay"]:
                _png(root / r["overlay"], seed=zlib.crc32(r["key"].encode()))
    for c in CLASSES:
        _png(root / f"mean_outside_{c}.png", seed=CLASSES.index(c), size=32)

    def group(field: str) -> dict[str, Any]:
        names = sorted({r[field] for r in rows if r[field] is not None})
        return {k: _stats([r for r in rows if r[field] == k], labeled) for k in names}

    regions: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for r in rows:
        if r["region"]:
            regions[r["region"]] = regions.get(r["region"], 0) + 1
        for x in r["reasons"]:
            reasons[x] = reasons.get(x, 0) + 1
    ein = [r["e_in"] for r in rows if r["e_in"] is not None]
    counts, bins = np.histogram(ein, bins=20, range=(0.0, 1.0))
    overall = _stats(rows, labeled)
    overall["mean_e_in_tol"] = float(np.mean([r["e_in_tol"] for r in rows if r["e_in_tol"] is not None]))
    metrics = None
    if labeled:
        conf = [[sum(1 for r in rows if r["label"] == t and r["pred"] == p) for p in CLASSES] for t in CLASSES]
        metrics = {
            "accuracy": overall["accuracy"],
            "macro_f1": 0.7,
            "macro_auc": 0.85,
            "confusion": conf,
            "per_class": {
                c: {"sensitivity": 0.8, "specificity": 0.9, "ppv": 0.7, "npv": 0.95, "f1": 0.75, "auc": None if i == 3 else 0.88}
                for i, c in enumerate(CLASSES)
            },
        }
    summary = {
        "schema_version": 1,
        "lungaudit_version": "0.1.0",
        "created": "2024-05-01T12:00:00+00:00",
        "run_dir": "runs/train/exp",
        "checkpoints": {"cls": {"path": "runs/train/exp/weights/best.pt", "sha256": "a" * 64}, "seg": None},
        "dataset": {"root": "/data/set", "layout": "covid", "fingerprint": fingerprint, "n_samples": n + 1, "splits": ["test"]},
        "config": {"cam": "gradcam", "out_threshold": 0.5, "tolerance_px": 8},
        "class_names": CLASSES,
        "counts": {
            "images": n + 1,
            "audited": n,
            "flagged": sum(r["flagged"] for r in rows),
            "no_evidence": sum(r["no_evidence"] for r in rows),
            "problems": 1,
        },
        "overall": overall,
        "per_class": group("label" if labeled else "pred"),
        "per_predicted_class": group("pred"),
        "per_source": group("source"),
        "regions": regions,
        "reasons": reasons,
        "metrics": metrics,
        "mean_outside_images": {c: f"mean_outside_{c}.png" for c in CLASSES},
        "e_in_histogram": {"bins": [float(b) for b in bins], "counts": [int(x) for x in counts]},
        "problems": [{"path": "/data/set/COVID/images/broken.png", "kind": "image", "reason": "truncated PNG <b>"}],
    }
    if mutate is not None:
        mutate(summary)
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    return root


def read_rows(audit_dir: Path) -> list[dict[str, str]]:
    with open(audit_dir / "audit.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def make_audit(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1000))

    def make(name: str | None = None, **kw: Any) -> Path:
        return write_audit_dir(tmp_path / (name or f"audit{next(counter)}"), **kw)

    return make


def edit_summary(audit_dir: Path, fn: Callable[[dict[str, Any]], None]) -> None:
    s = json.loads((audit_dir / "summary.json").read_text())
    s = copy.deepcopy(s)
    fn(s)
    (audit_dir / "summary.json").write_text(json.dumps(s))
