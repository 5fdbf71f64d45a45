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

from lungaudit.audit.aggregate import aggregate_rows
from lungaudit.audit.schema import SCHEMA_VERSION, AuditRow, Summary, csv_columns

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
SOURCES = ["source-A", "source-B"]
REGIONS = ["border", "above", "below", "lateral", "mediastinum"]


def _png(path: Path, seed: int, size: int = 24) -> None:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def build_rows(n: int, labeled: bool, seed: int) -> list[AuditRow]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = CLASSES[i % len(CLASSES)]
        pred = label if rng.random() < 0.75 else CLASSES[(i + 1) % len(CLASSES)]
        no_ev = i == 3  # one no-evidence image
        e_in = None if no_ev else float(rng.uniform(0.1, 0.95))
        e_in_tol = None if no_ev else min(1.0, e_in + 0.05)
        flip = bool(rng.random() < 0.2)
        reasons = []
        if e_in_tol is not None and (1 - e_in_tol) > 0.5:
            reasons.append("out_of_lung_energy")
        if flip:
            reasons.append("flip_under_masking")
        if no_ev:
            reasons.append("no_evidence")
        flagged = bool(reasons)
        region = REGIONS[i % len(REGIONS)] if (flagged and not no_ev) else None
        probs = rng.dirichlet(np.ones(len(CLASSES)))
        rows.append(
            AuditRow(
                key=f"{label}/images/img_{i:03d}, x.png",  # a comma: CSV quoting is exercised
                path=f"/data/set/{label}/images/img_{i:03d}, x.png",
                label=label if labeled else None,
                source=SOURCES[i % 2] if labeled else None,
                split="test",
                mask_source="given",
                pred=pred,
                prob_pred=float(probs.max()),
                pred_masked=pred if not flip else CLASSES[(CLASSES.index(pred) + 1) % 4],
                prob_masked=float(probs.max() * 0.8),
                prob_drop=float(probs.max() * 0.2),
                flip=flip,
                e_in=e_in,
                e_in_tol=e_in_tol,
                e_out=None if e_in is None else 1 - e_in,
                e_out_tol=None if e_in_tol is None else 1 - e_in_tol,
                e_in_ratio=None if e_in is None else e_in / 0.3,
                lung_area=0.3,
                no_evidence=no_ev,
                region=region,
                marker_overlap=bool(region == "border"),
                marker_box=(2, 3, 10, 12) if region == "border" else None,
                pred_without_markers=pred,
                marker_flip=False,
                flagged=flagged,
                reasons=tuple(reasons),
                overlay=f"overlays/img_{i:03d}.png" if flagged else None,
                probs={c: float(p) for c, p in zip(CLASSES, probs)},
            )
        )
    return rows


def write_audit_dir(
    root: Path,
    *,
    n: int = 24,
    labeled: bool = True,
    seed: int = 0,
    fingerprint: str = "f" * 64,
    mutate: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Write ``root`` as an audit dir through the audit's own schema and aggregator;
    ``mutate(summary)`` may edit the summary dict before it is saved."""
    root.mkdir(parents=True, exist_ok=True)
    rows = build_rows(n, labeled, seed)
    with open(root / "audit.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=csv_columns(CLASSES))
        w.writeheader()
        for r in rows:
            w.writerow(r.to_csv(CLASSES))
            if r.overlay:
                _png(root / r.overlay, seed=zlib.crc32(r.key.encode()))
    for c in CLASSES:
        _png(root / f"mean_outside_{c}.png", seed=CLASSES.index(c), size=32)
    blocks = aggregate_rows(rows, CLASSES)
    summary = Summary.model_validate({
        "schema_version": SCHEMA_VERSION,
        "lungaudit_version": "0.2.0",
        "created": "2024-05-01T12:00:00+00:00",
        "run_dir": "runs/train/exp",
        "checkpoints": {"cls": {"path": "runs/train/exp/weights/best.pt", "sha256": "a" * 64}, "seg": None},
        "dataset": {"root": "/data/set", "layout": "covid", "fingerprint": fingerprint, "n_samples": n + 1, "splits": ["test"]},
        "config": {"cam": "gradcam", "out_threshold": 0.5, "tolerance_px": 8},
        "class_names": CLASSES,
        **blocks,
        "counts": {**blocks["counts"], "images": n + 1, "problems": 1},
        "mean_outside_images": {c: f"mean_outside_{c}.png" for c in CLASSES},
        "problems": [{"path": "/data/set/COVID/images/broken.png", "kind": "image", "reason": "truncated PNG <b>"}],
    }).model_dump(mode="json")
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
