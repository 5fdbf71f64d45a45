"""Where each real radiograph's label comes from: a labels CSV, or the file name's ``_<suffix>``.

* ``--suffix-labels 0=Normal,1=TB``: the part of the stem after its last underscore names the label
  (the Shenzhen and Montgomery sets end every file name in ``_0`` or ``_1``).
* ``--labels labels.csv``: columns ``label`` and one of ``path`` / ``stem`` (also ``file``,
  ``filename``, ``image``). A path matches the image's path relative to the input folder, its file
  name, or its stem, case-insensitively, so a CSV written for another copy of the same set still fits.

Labels only ever go into the manifest; nothing here chooses a file name.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from lungaudit.data.records import Problem

KEY_COLUMNS: tuple[str, ...] = ("path", "stem", "file", "filename", "image")
_CONFLICT = -1


class LabelSpecError(ValueError):
    """A label source (CSV or suffix spec) that cannot be used at all."""


def parse_suffix_labels(spec: str) -> dict[str, str]:
    """``"0=Normal,1=TB"`` -> ``{"0": "Normal", "1": "TB"}``; raises :class:`LabelSpecError`."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        key, sep, label = (s.strip() for s in part.partition("="))
        if not sep or not key or not label:
            raise LabelSpecError(f"suffix label {part!r} is not of the form SUFFIX=LABEL (e.g. 0=Normal,1=TB)")
        if key in out and out[key] != label:
            raise LabelSpecError(f"suffix {key!r} is given two labels ({out[key]!r} and {label!r})")
        out[key] = label
    if not out:
        raise LabelSpecError(f"no SUFFIX=LABEL pair in {spec!r} (e.g. 0=Normal,1=TB)")
    return out


def suffix_label(stem: str, mapping: dict[str, str]) -> str | None:
    """The label named by the part of ``stem`` after its last underscore, or None."""
    head, sep, tail = stem.rpartition("_")
    return mapping.get(tail) if sep and head else None


def _norm(path: str) -> str:
    p = PurePosixPath(path.strip().replace("\\", "/").lower())
    return str(p)[2:] if str(p).startswith("./") else str(p)


@dataclass
class LabelTable:
    """Labels read from a CSV, indexed by normalised path, file name and stem."""

    source: Path
    labels: list[tuple[int, str]] = field(default_factory=list)  # (CSV line, label)
    index: dict[str, int] = field(default_factory=dict)  # key -> position in labels, or _CONFLICT
    used: set[int] = field(default_factory=set)

    def _add(self, key: str, pos: int) -> None:
        old = self.index.get(key)
        if old is None:
            self.index[key] = pos
        elif old != _CONFLICT and self.labels[old][1] != self.labels[pos][1]:
            self.index[key] = _CONFLICT

    def lookup(self, rel_path: str) -> tuple[str | None, str]:
        """(label, "") for an image at ``rel_path`` (relative to the input), else (None, reason)."""
        p = PurePosixPath(_norm(rel_path))
        for key in (str(p), p.name, p.stem):
            pos = self.index.get(key)
            if pos == _CONFLICT:
                return None, f"{self.source.name} gives it conflicting labels (key {key!r})"
            if pos is not None:
                self.used.add(pos)
                return self.labels[pos][1], ""
        return None, f"no label for it in {self.source.name}"

    def unused_problems(self) -> list[Problem]:
        """Rows that matched no image: usually a typo or a file that is missing from the folder."""
        return [
            Problem(self.source, f"row {line}: label {label!r} matches no usable image", "manifest")
            for pos, (line, label) in enumerate(self.labels)
            if pos not in self.used
        ]


def read_label_table(path: Path) -> tuple[LabelTable, list[Problem]]:
    """Read a labels CSV; raises :class:`LabelSpecError` when the file or its header is unusable."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise LabelSpecError(f"{path}: cannot read labels CSV ({e})") from None
    reader = csv.DictReader(io.StringIO(text))
    header = {h: (h or "").strip().lower() for h in reader.fieldnames or []}
    key_col = next((c for c in KEY_COLUMNS if c in header.values()), None)
    if "label" not in header.values() or key_col is None:
        raise LabelSpecError(
            f"{path}: a labels CSV needs a 'label' column and one of {', '.join(KEY_COLUMNS)} "
            f"(header is {', '.join(reader.fieldnames or []) or 'empty'})"
        )
    table, problems = LabelTable(Path(path)), []
    for line, raw in enumerate(reader, start=2):
        row = {header[k]: (v or "").strip() for k, v in raw.items() if k is not None}
        key, label = row.get(key_col, ""), row.get("label", "")
        if not key and not label:
            continue
        if not key or not label:
            problems.append(Problem(Path(path), f"row {line}: empty {key_col if not key else 'label'}", "manifest"))
            continue
        table.labels.append((line, label))
        pos = len(table.labels) - 1
        p = PurePosixPath(_norm(key))
        keys = {str(p)} if key_col == "stem" else {str(p), p.name, p.stem}
        for k in keys:
            table._add(k, pos)
    if not table.labels:
        raise LabelSpecError(f"{path}: the labels CSV has no usable row")
    return table, problems


__all__ = ["LabelSpecError", "LabelTable", "parse_suffix_labels", "read_label_table", "suffix_label"]
