"""Read and validate an audit directory (``runs/audit/<name>/``) written by ``lungaudit audit``.

Everything downstream of the audit (HTML report, release gate, comparison) reads through here, with
the audit's own schema (:mod:`lungaudit.audit.schema`), so a malformed or tampered directory fails
once, early, with the file and the problem named, instead of as a ``KeyError`` deep in a renderer.

Layout::

    audit.csv                  one row per image (``AuditRow``)
    summary.json               dataset aggregates (``Summary``)
    overlays/*.png, thumbs/*.jpg   heatmap overlays of flagged images and their thumbnails
    mean_outside_*.png         mean out-of-lung heatmap per predicted class
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lungaudit.audit.schema import BASE_COLUMNS as AUDIT_COLUMNS
from lungaudit.audit.schema import AuditRow, SchemaError, Summary, csv_columns, row_from_csv, summary_from_json

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
AUDIT_CSV = "audit.csv"


class AuditDirError(ValueError):
    """An audit directory, or one of its files, that is missing or malformed."""


def validate_summary(data: Any, file: Path | str = SUMMARY_FILE) -> Summary:
    """Check parsed ``summary.json`` content against the schema; raises ``AuditDirError`` naming file and key."""
    try:
        return summary_from_json(data, str(file))
    except SchemaError as e:
        raise AuditDirError(str(e)) from None


def load_summary(audit_dir: str | Path) -> Summary:
    """Read and validate ``audit_dir/summary.json`` (``audit_dir`` may also be the file itself)."""
    p = Path(audit_dir)
    file = p if p.suffix == ".json" else p / SUMMARY_FILE
    if p.suffix != ".json" and not p.is_dir():
        raise AuditDirError(f"{p}: not an audit directory (does not exist or is not a folder)")
    if not file.is_file():
        raise AuditDirError(f"{file}: missing (is {file.parent} the output folder of `lungaudit audit`?)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AuditDirError(f"{file}: not valid JSON: {e}") from None
    except OSError as e:
        raise AuditDirError(f"{file}: cannot be read: {e.strerror or e}") from None
    return validate_summary(data, file)


def read_audit_csv(file: str | Path, class_names: list[str] | tuple[str, ...]) -> list[AuditRow]:
    """Parse ``audit.csv``; every required column must be present, every cell well-typed, keys unique."""
    file = Path(file)
    if not file.is_file():
        raise AuditDirError(f"{file}: missing")
    rows: list[AuditRow] = []
    try:
        with open(file, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in csv_columns(class_names) if c not in (reader.fieldnames or [])]
            if missing:
                raise AuditDirError(f"{file}: missing column(s) {', '.join(missing)}")
            seen: set[str] = set()
            for line, raw in enumerate(reader, start=2):
                where = f"{file}, line {line}"
                if None in raw or any(v is None for v in raw.values()):
                    raise AuditDirError(f"{where}: wrong number of fields")
                try:
                    row = row_from_csv(raw, class_names)
                except SchemaError as e:
                    raise AuditDirError(f"{where}, {e}") from None
                if row.key in seen:
                    raise AuditDirError(f"{where}: duplicate key {row.key!r} (two audits written into one folder?)")
                seen.add(row.key)
                rows.append(row)
    except UnicodeDecodeError:
        raise AuditDirError(f"{file}: not UTF-8 text") from None
    return rows


@dataclass
class AuditDir:
    """A validated audit directory: its summary and its typed rows."""

    path: Path
    summary: Summary
    rows: list[AuditRow]
    warnings: list[str] = field(default_factory=list)  # inconsistencies worth showing, not fatal

    @property
    def class_names(self) -> list[str]:
        return list(self.summary.class_names)

    @property
    def flagged(self) -> list[AuditRow]:
        return [r for r in self.rows if r.flagged]

    def resolve(self, rel: str) -> Path:
        """A path from the audit files, relative to the audit dir; refuses to leave the dir."""
        # realpath follows links (a link to a file outside is outside) and, unlike Path.resolve() on
        # Python 3.11, does not raise on a symlink loop
        p, root = Path(os.path.realpath(self.path / rel)), Path(os.path.realpath(self.path))
        if p != root and root not in p.parents:
            raise AuditDirError(f"{self.path}: referenced file {rel!r} lies outside the audit directory")
        return p


def load_audit_dir(audit_dir: str | Path) -> AuditDir:
    """Read and validate ``summary.json`` and ``audit.csv`` of an audit directory."""
    path = Path(audit_dir)
    summary = load_summary(path)
    rows = read_audit_csv(path / AUDIT_CSV, summary.class_names)
    warnings: list[str] = []
    n_flagged = sum(r.flagged for r in rows)
    if len(rows) != summary.counts.audited or n_flagged != summary.counts.flagged:
        # Not fatal: the rows are the ground truth for the gallery, but the mismatch is shown.
        warnings.append(
            f"{AUDIT_CSV} has {len(rows)} rows ({n_flagged} flagged) but {SUMMARY_FILE} counts "
            f"{summary.counts.audited} audited ({summary.counts.flagged} flagged): files from different runs?"
        )
    for w in warnings:
        log.warning("%s: %s", path, w)
    return AuditDir(path=path, summary=summary, rows=rows, warnings=warnings)


__all__ = [
    "AUDIT_COLUMNS", "AUDIT_CSV", "SUMMARY_FILE", "AuditDir", "AuditDirError", "AuditRow", "load_audit_dir",
    "load_summary", "read_audit_csv", "validate_summary",
]
