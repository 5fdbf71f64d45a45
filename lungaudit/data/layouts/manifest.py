"""``manifest``: ``root`` is a ``.csv`` file, or ``root/manifest.csv`` exists.

Columns ``path,label[,mask][,source][,patient_id][,split]``; any other column goes to ``Sample.extra``
(a ``twin`` column is resolved to a path). Relative paths resolve against the CSV's folder.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from lungaudit.config import CLASS_NAMES
from lungaudit.data.layouts.base import DatasetError, Layout, register_layout
from lungaudit.data.layouts.files import link_problem
from lungaudit.data.records import Problem, Sample
from lungaudit.data.split import SPLITS

MANIFEST_NAME = "manifest.csv"
MANIFEST_REQUIRED: tuple[str, ...] = ("path", "label")
MANIFEST_KNOWN: tuple[str, ...] = ("path", "label", "mask", "source", "patient_id", "split")
_SPLIT_SYNONYMS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}  # fmt: skip


def _resolve(base: Path, value: str) -> Path:
    # os.path.realpath, not Path.resolve(): on Python 3.11 the latter raises on a symlink loop, which
    # must become a problem row, not a crash
    p = Path(value)
    return Path(os.path.realpath(p if p.is_absolute() else base / p))


def _read_rows(csv_path: Path) -> tuple[csv.DictReader, dict[str, str]]:
    """The CSV's row reader and its header map (raw name -> stripped lower-case name).

    Raises :class:`DatasetError` naming the file when it is unreadable, empty or lacks a required column.
    """
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{csv_path}: cannot read manifest ({e})") from None
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        raise DatasetError(f"{csv_path}: manifest is empty (no header row)")
    header = {h: (h or "").strip().lower() for h in reader.fieldnames}
    missing = [c for c in MANIFEST_REQUIRED if c not in set(header.values())]
    if missing:
        raise DatasetError(
            f"{csv_path}: manifest lacks required column(s) {', '.join(missing)} "
            f"(header is {', '.join(reader.fieldnames)}; expected path,label[,mask][,source][,patient_id][,split])"
        )
    return reader, header


def _sample(base: Path, row: dict[str, str], line: int, problems: list[Problem]) -> Sample | None:
    """The sample of one manifest row (``line`` counts the header as 1), or None with a problem."""
    path = _resolve(base, row["path"])
    if not path.is_file():
        given = Path(os.path.abspath(base / row["path"]))  # the path as written: a dangling link, not its target
        problems.append(Problem(given, f"{link_problem(given) or 'file not found'} (manifest row {line})", "image"))
        return None
    split = row.get("split") or None
    if split is not None:
        norm = _SPLIT_SYNONYMS.get(split.lower())
        if norm is None:
            reason = f"bad split value {split!r} (manifest row {line}; expected one of {', '.join(SPLITS)})"
            problems.append(Problem(path, reason, "manifest"))
            return None  # dropping is safe; guessing a split could leak a test image into training
        split = norm
    mask = None
    if row.get("mask"):
        mask = _resolve(base, row["mask"])
        if not mask.is_file():
            problems.append(Problem(mask, f"mask file not found (manifest row {line})", "mask"))
            mask = None
    extra: dict[str, Any] = {k: v for k, v in row.items() if k not in MANIFEST_KNOWN and k}
    if "twin" in extra:
        extra["twin"] = _resolve(base, extra["twin"]) if extra["twin"] else None
    return Sample(
        path=path,
        label=row.get("label") or None,
        mask_path=mask,
        source=row.get("source") or None,
        patient_id=row.get("patient_id") or None,
        split=split,
        extra=extra,
    )


@register_layout
class ManifestLayout(Layout):
    name = "manifest"
    priority = 10  # first: a manifest names its files explicitly, whatever folders sit beside it
    expected = f"a {MANIFEST_NAME}"

    def detect(self, root: Path) -> bool:
        if root.is_file():
            return root.suffix.lower() == ".csv"
        return (root / MANIFEST_NAME).is_file()

    def _csv_path(self, root: Path) -> Path:
        csv_path = root if root.is_file() else root / MANIFEST_NAME
        if not csv_path.is_file():
            raise DatasetError(f"{root}: layout 'manifest' needs a .csv file or a folder holding {MANIFEST_NAME}")
        return csv_path

    def data_root(self, root: Path) -> Path:
        return self._csv_path(root).parent

    def discover(self, root: Path, problems: list[Problem]) -> tuple[list[Sample], tuple[str, ...]]:
        csv_path = self._csv_path(root)
        reader, header = _read_rows(csv_path)
        samples: list[Sample] = []
        line = 1
        try:
            for line, raw in enumerate(reader, start=2):
                row = {header[k]: (v or "").strip() for k, v in raw.items() if k is not None}
                if any("\x00" in v for v in row.values()):
                    # no path with a NUL can name a file; os calls would raise ValueError on it
                    problems.append(Problem(csv_path, f"row {line}: contains a NUL character (skipped)", "manifest"))
                    continue
                if not row.get("path"):
                    if any(row.values()):
                        problems.append(Problem(csv_path, f"row {line}: empty path", "manifest"))
                    continue
                sample = _sample(csv_path.parent, row, line, problems)
                if sample is not None:
                    samples.append(sample)
        except csv.Error as e:  # e.g. a field over the csv module's size limit
            raise DatasetError(f"{csv_path}: not a readable CSV at row {line + 1}: {e}") from None
        labels = {s.label for s in samples if s.label is not None}
        class_names = CLASS_NAMES if labels <= set(CLASS_NAMES) else tuple(sorted(labels))
        return samples, class_names
