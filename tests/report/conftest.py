"""A fixture factory that writes a small but schema-valid audit directory.

The real ``lungaudit audit`` is not needed: the report stage only depends on the files' schema.
"""

from __future__ import annotations

import copy
import csv
import functools
import json
import os
import zlib
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pytest

from lungaudit.audit.aggregate import aggregate_rows
from lungaudit.audit.overlay import thumbnail_for, thumbnail_jpeg
from lungaudit.audit.schema import SCHEMA_VERSION, AuditRow, Summary, csv_columns

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
SOURCES = ["source-A", "source-B"]
REGIONS = ["border", "above", "below", "lateral", "mediastinum"]


def _png(path: Path, seed: int, size: int = 24) -> None:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


# Where a flagged image's heatmap sits, per hotspot region, on a 256 px phantom (x, y; None: on the marker).
_HOTSPOT = {"border": None, "above": (128, 8), "below": (128, 250), "lateral": (10, 150), "mediastinum": (128, 118)}


@functools.lru_cache(maxsize=None)
def realistic_picture(class_index: int, region: str | None) -> tuple[bytes, bytes]:
    """``(overlay PNG, thumbnail JPEG)`` as the audit draws them, on a phantom of that class with its
    corner marker and a heatmap blob in ``region``: real sizes and looks, made once per session."""
    from lungaudit.audit.overlay import render_overlay, thumbnail_jpeg
    from lungaudit.data.synth.plan import CaseParams
    from lungaudit.data.synth.render import render_case

    label = CLASSES[class_index % len(CLASSES)]
    params = CaseParams(label=label, file_index=1, split="test", source=0, patient_id="p", size=256,
                        anatomy_key=(class_index,), noise_key=(class_index,), marker_class=class_index % 4)
    image, mask, _, meta = render_case(params)
    box = meta["boxes"].get("markers")
    yy, xx = np.mgrid[0:256, 0:256]
    cam = np.zeros((256, 256))
    if region is not None:
        cx, cy = _HOTSPOT.get(region) or (((box[0] + box[2]) / 2, (box[1] + box[3]) / 2) if box else (20, 20))
        cam = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 22**2)) + 0.3 * np.exp(-((xx - 128) ** 2 + (yy - 140) ** 2) / 5000)
    lines = [f"pred {label} (0.87)  true {label}", f"E_in 0.31 (tol 0.36)  region {region or '-'}", "reasons: out_of_lung_energy"]
    picture = render_overlay(image / 255.0, mask > 0, cam, box, lines)
    ok, png = cv2.imencode(".png", picture)
    assert ok
    return png.tobytes(), thumbnail_jpeg(picture)


def _place(path: Path, data: bytes, first: dict[bytes, Path]) -> None:
    """Write ``data`` at ``path``; repeated pictures become hard links, so 2000 overlays cost one file each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    src = first.get(data)
    if src is not None:
        try:
            os.link(src, path)
            return
        except OSError:  # a file system without hard links: copy
            pass
    path.write_bytes(data)
    first.setdefault(data, path)


def build_rows(
    n: int, labeled: bool, seed: int, classes: list[str] | None = None, flagged_only: bool = False
) -> list[AuditRow]:
    """``n`` rows, about half flagged (every one with ``flagged_only``); row 3 holds no evidence."""
    classes = classes or CLASSES
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = classes[i % len(classes)]
        pred = label if rng.random() < 0.75 else classes[(i + 1) % len(classes)]
        no_ev = i == 3  # one no-evidence image
        e_in = None if no_ev else float(rng.uniform(0.1, 0.44 if flagged_only else 0.95))
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
        probs = rng.dirichlet(np.ones(len(classes)))
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
                pred_masked=pred if not flip else classes[(classes.index(pred) + 1) % len(classes)],
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
                probs={c: float(p) for c, p in zip(classes, probs)},
            )
        )
    return rows


def _write_pictures(root: Path, rows: list[AuditRow], classes: list[str], thumbs: bool, realistic: bool) -> None:
    """Overlays (and thumbnails) of the flagged rows: random noise by default, phantoms with ``realistic``."""
    first: dict[bytes, Path] = {}
    for r in rows:
        if not r.overlay:
            continue
        if realistic:
            png, jpg = realistic_picture(classes.index(r.pred) % len(CLASSES), r.region)
            _place(root / r.overlay, png, first)
        else:
            _png(root / r.overlay, seed=zlib.crc32(r.key.encode()))
            jpg = thumbnail_jpeg(cv2.imread(str(root / r.overlay))) if thumbs else b""
        if thumbs:
            _place(root / thumbnail_for(r.overlay), jpg, first)


def write_audit_dir(
    root: Path,
    *,
    n: int = 24,
    labeled: bool = True,
    seed: int = 0,
    fingerprint: str = "f" * 64,
    mutate: Callable[[dict[str, Any]], None] | None = None,
    classes: list[str] | None = None,
    flagged_only: bool = False,
    thumbs: bool = False,
    realistic: bool = False,
) -> Path:
    """Write ``root`` as an audit dir through the audit's own schema and aggregator;
    ``mutate(summary)`` may edit the summary dict before it is saved.

    By default the folder looks like one from before thumbnails (``overlays/`` only, tiny noise PNGs);
    ``thumbs`` adds ``thumbs/*.jpg`` as the audit writes them now, ``realistic`` draws every overlay and
    thumbnail from phantoms at the audit's real sizes (a few distinct pictures, hard-linked).
    """
    classes = list(classes or CLASSES)
    root.mkdir(parents=True, exist_ok=True)
    rows = build_rows(n, labeled, seed, classes, flagged_only)
    with open(root / "audit.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=csv_columns(classes))
        w.writeheader()
        for r in rows:
            w.writerow(r.to_csv(classes))
    _write_pictures(root, rows, classes, thumbs, realistic)
    for i, c in enumerate(classes):
        _png(root / f"mean_outside_{i:02d}.png", seed=i, size=32)
    blocks = aggregate_rows(rows, classes)
    summary = Summary.model_validate({
        "schema_version": SCHEMA_VERSION,
        "lungaudit_version": "0.2.0",
        "created": "2024-05-01T12:00:00+00:00",
        "run_dir": "runs/train/exp",
        "checkpoints": {"cls": {"path": "runs/train/exp/weights/best.pt", "sha256": "a" * 64}, "seg": None},
        "dataset": {"root": "/data/set", "layout": "covid", "fingerprint": fingerprint, "n_samples": n + 1, "splits": ["test"]},
        "config": {"cam": "gradcam", "out_threshold": 0.5, "tolerance_px": 8},
        "class_names": classes,
        **blocks,
        "counts": {**blocks["counts"], "images": n + 1, "problems": 1},
        "mean_outside_images": {c: f"mean_outside_{i:02d}.png" for i, c in enumerate(classes)},
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


BIG_FLAGGED = 2000  # issue 10: the report must stay small and fast at this many flagged images


@pytest.fixture(scope="session")
def big_audit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An audit folder with 2000 flagged images (audit-size thumbnails, hard-linked overlays) and its
    report, built once per session without a model: ``(audit_dir, report.html)``."""
    from lungaudit.report.html import write_report

    d = write_audit_dir(tmp_path_factory.mktemp("big") / "audit", n=BIG_FLAGGED, flagged_only=True, thumbs=True, realistic=True)
    return d, write_report(d)


def edit_summary(audit_dir: Path, fn: Callable[[dict[str, Any]], None]) -> None:
    s = json.loads((audit_dir / "summary.json").read_text())
    s = copy.deepcopy(s)
    fn(s)
    (audit_dir / "summary.json").write_text(json.dumps(s))
