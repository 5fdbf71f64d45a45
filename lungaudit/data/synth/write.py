"""Writing: render the planned cases in worker processes and write images, masks, twins, the
metadata workbooks, ``manifest.csv`` and ``synth_config.yaml``.

Every file name comes from the plan (class name and file index), never from rendered data; files are
byte-identical for a given config whatever the worker count.
"""

from __future__ import annotations

import csv
import datetime
import io
import logging
import multiprocessing
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import cv2

from lungaudit.config import CLASS_NAMES, SynthConfig, save_config
from lungaudit.data.synth.acquire import source_name, source_url
from lungaudit.data.synth.plan import CaseParams, plan_cases
from lungaudit.data.synth.render import render_case
from lungaudit.utils import atomic_write_bytes, atomic_write_png, atomic_write_text

log = logging.getLogger(__name__)

MANIFEST_COLUMNS: tuple[str, ...] = (
    "path",
    "mask",
    "label",
    "split",
    "source",
    "patient_id",
    "shortcut",
    "shortcut_box",
    "twin",
)
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # stamped into the workbooks so their bytes never change


def _rel(label: str, kind: str, stem: str) -> str:
    return f"{label}/{kind}/{stem}.png"


def _write_case(job: tuple[Path, CaseParams]) -> dict[str, str]:
    """Render and write one case under the output folder; returns its manifest row."""
    out, p = job
    image, mask, twin, meta = render_case(p)
    img_rel, mask_rel = _rel(p.label, "images", p.stem), _rel(p.label, "masks", p.stem)
    atomic_write_png(out / img_rel, image)
    atomic_write_png(out / mask_rel, mask)
    twin_rel = ""
    if twin is not None:
        twin_rel = f"twins/{p.label}/{p.stem}.png"
        atomic_write_png(out / twin_rel, twin)
    boxes = meta["boxes"]
    box_str = ";".join(" ".join(str(v) for v in boxes[k]) for k in ("markers", "shoulders") if k in boxes)
    return {
        "path": img_rel,
        "mask": mask_rel,
        "label": p.label,
        "split": p.split,
        "source": source_name(p.source),
        "patient_id": p.patient_id,
        "shortcut": ";".join(meta["shortcuts"]),
        "shortcut_box": box_str,
        "twin": twin_rel,
    }


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; avoid oversubscription


def _write_all(
    out: Path, cases: list[CaseParams], workers: int, progress: Callable[[int, int], None] | None
) -> list[dict[str, str]]:
    """Write every case with ``workers`` processes; manifest rows come back in plan order."""
    jobs = [(out, p) for p in cases]
    total = len(jobs)
    rows: list[dict[str, str]] = []
    if workers == 1:
        _init_worker()
        for j in jobs:
            rows.append(_write_case(j))
            if progress:
                progress(len(rows), total)
        return rows
    chunk = max(1, min(16, total // (workers * 8)))
    with multiprocessing.get_context().Pool(workers, initializer=_init_worker) as pool:
        for row in pool.imap(_write_case, jobs, chunksize=chunk):  # imap keeps the order
            rows.append(row)
            if progress:
                progress(len(rows), total)
    return rows


def _deterministic_xlsx(rows: list[tuple[str, str, str, str]]) -> bytes:
    """A metadata workbook like the real data base's, with fixed timestamps so bytes are stable."""
    from openpyxl import Workbook
    from openpyxl.writer.excel import ExcelWriter

    wb = Workbook()
    ws = wb.active
    ws.title = "Sheet1"
    ws.append(["FILE NAME", "FORMAT", "SIZE", "URL"])
    for r in rows:
        ws.append(list(r))
    fixed = datetime.datetime(*_FIXED_TIME)
    wb.properties.created = wb.properties.modified = fixed
    wb.properties.creator = "lungaudit synth"
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        ExcelWriter(wb, archive).save()
    # zip entries carry the wall-clock time; rewrite them with a fixed one
    out = io.BytesIO()
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            zi = zipfile.ZipInfo(info.filename, date_time=_FIXED_TIME)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            dst.writestr(zi, src.read(info.filename))
    return out.getvalue()


def _write_metadata(out: Path, cases: list[CaseParams], size: int) -> None:
    """``<CLASS>.metadata.xlsx`` per class: file name, format, size and source URL per image."""
    for label in CLASS_NAMES:
        rows = [(p.stem, "PNG", f"{size}*{size}", source_url(p.source)) for p in cases if p.label == label]
        atomic_write_bytes(out / f"{label}.metadata.xlsx", _deterministic_xlsx(rows))


def _write_manifest(out: Path, rows: list[dict[str, str]]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    manifest = out / "manifest.csv"
    atomic_write_text(manifest, buf.getvalue())
    return manifest


def generate(out: Path, cfg: SynthConfig, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the synthetic data set under ``out`` and return the path of ``manifest.csv``.

    ``progress(done, total)`` is called after each image. Raises ``ValueError`` for an invalid config.
    """
    out = Path(out)
    cases = plan_cases(cfg)
    for label in CLASS_NAMES:
        for sub in ("images", "masks"):
            (out / label / sub).mkdir(parents=True, exist_ok=True)
        (out / "twins" / label).mkdir(parents=True, exist_ok=True)
    workers = cfg.workers or os.cpu_count() or 1
    log.info("generating %d phantoms at %d px with %d worker(s) into %s", len(cases), cfg.size, workers, out)
    rows = _write_all(out, cases, workers, progress)
    _write_metadata(out, cases, cfg.size)
    manifest = _write_manifest(out, rows)
    save_config(cfg, out / "synth_config.yaml")
    return manifest
