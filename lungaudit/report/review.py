"""Close the review loop: apply a curator's ``decisions.csv`` (exported by the HTML report) to a data set.

``decisions.csv`` has the columns ``key,decision,new_label``; ``decision`` is ``keep``, ``exclude`` or
``relabel`` and ``new_label`` is required for (and only for) ``relabel``. A key is the image's path
relative to the data set root (what the audit writes and the report exports), so a data set that was
moved or mounted elsewhere still matches its decisions; an absolute path is accepted too.

The result is a cleaned manifest (``path,label,mask,source,patient_id,split`` with absolute paths,
then every other column the data set carried, e.g. ``twin``, ``shortcut``, plus ``relabelled_from``)
that the manifest loader reads back: kept and relabelled images stay, excluded ones go, undecided
images are kept unchanged. It is never written inside the data set it came from.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from typing import Any

from lungaudit.data.records import Sample
from lungaudit.runs.runinfo import sample_key
from lungaudit.utils import atomic_write_json, atomic_write_text

DECISIONS = ("keep", "exclude", "relabel")
DECISION_COLUMNS = ("key", "decision", "new_label")
MANIFEST_COLUMNS = ("path", "label", "mask", "source", "patient_id", "split")
MANIFEST_FILE = "manifest.csv"


class ReviewError(ValueError):
    """A decisions file, or a decision, that cannot be applied (exit code 2)."""


@dataclass(frozen=True)
class Decision:
    key: str
    decision: str  # keep | exclude | relabel
    new_label: str | None = None
    line: int = 0  # line in decisions.csv, for error messages (0 = not from a file)

    @property
    def where(self) -> str:
        return f"line {self.line} (key {self.key!r})" if self.line else f"key {self.key!r}"


@dataclass(frozen=True)
class ReviewCounts:
    kept: int  # explicit keep decisions
    excluded: int
    relabelled: int
    undecided: int  # images without a decision, kept as they were

    @property
    def total_out(self) -> int:
        return self.kept + self.relabelled + self.undecided


def _check(d: Decision, class_names: Sequence[str] | None) -> Decision:
    if d.decision not in DECISIONS:
        raise ReviewError(f"{d.where}: unknown decision {d.decision!r}; valid: {', '.join(DECISIONS)}")
    if d.decision == "relabel":
        if not d.new_label:
            raise ReviewError(f"{d.where}: relabel needs a new_label")
        if class_names is not None and d.new_label not in class_names:
            raise ReviewError(f"{d.where}: new_label {d.new_label!r} is not a class; valid: {', '.join(class_names)}")
    elif d.new_label:
        raise ReviewError(f"{d.where}: new_label {d.new_label!r} given for decision {d.decision!r} (only relabel takes one)")
    return d


def parse_decisions(text: str, source: str = "decisions.csv", class_names: Sequence[str] | None = None) -> list[Decision]:
    """Parse and validate decisions CSV text; errors name the file and line."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in ("key", "decision") if c not in header]
    if missing:
        raise ReviewError(f"{source}: missing column(s) {', '.join(missing)}; expected header {','.join(DECISION_COLUMNS)}")
    out: list[Decision] = []
    first: dict[str, int] = {}
    for line, row in enumerate(reader, start=2):
        if None in row:
            raise ReviewError(f"{source}, line {line}: too many fields")
        key = (row.get("key") or "").strip()
        if not key:
            raise ReviewError(f"{source}, line {line}: empty key")
        if key in first:
            raise ReviewError(f"{source}, line {line}: duplicate key {key!r} (first at line {first[key]})")
        first[key] = line
        d = Decision(key, (row.get("decision") or "").strip().lower(), (row.get("new_label") or "").strip() or None, line)
        try:
            out.append(_check(d, class_names))
        except ReviewError as e:
            raise ReviewError(f"{source}, {e}") from None
    return out


def read_decisions(path: str | Path, class_names: Sequence[str] | None = None) -> list[Decision]:
    p = Path(path)
    if not p.is_file():
        raise ReviewError(f"{p}: decisions file does not exist")
    try:
        # utf-8-sig: spreadsheets that re-save the CSV prepend a BOM to the first column name
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ReviewError(f"{p}: decisions file is not UTF-8 text (export it again from the report)") from None
    except OSError as e:
        raise ReviewError(f"{p}: decisions file cannot be read: {e.strerror or e}") from None
    try:
        return parse_decisions(text, str(p), class_names)
    except csv.Error as e:
        raise ReviewError(f"{p}: not a readable CSV ({e})") from None


def _norm(p: str | Path) -> str:
    return os.path.normcase(os.path.abspath(p))


def apply_decisions(
    samples: Sequence[Sample],
    decisions: Iterable[Decision],
    class_names: Sequence[str] | None = None,
    root: str | Path | None = None,
) -> list[Sample]:
    """Samples after review: excluded dropped, relabelled with their new label, the rest unchanged.

    A decision's key matches, in this order: the image's path relative to ``root`` (the audit's row
    key, so a moved data set still matches), ``Sample.key`` exactly, or the same file by absolute
    path. A key that matches no sample raises ``ReviewError``: silently ignoring it would hide a
    review applied to the wrong data set. Order of ``samples`` is preserved; inputs are not modified.
    """
    by_rel = {sample_key(s.path, root): i for i, s in enumerate(samples)} if root is not None else {}
    by_key = {s.key: i for i, s in enumerate(samples)}
    by_path = {_norm(s.path): i for i, s in enumerate(samples)}
    chosen: dict[int, Decision] = {}
    for d in decisions:
        _check(d, class_names)
        idx = by_rel.get(d.key.replace("\\", "/"))
        if idx is None:
            idx = by_key.get(d.key)
        if idx is None:
            idx = by_path.get(_norm(d.key))
        if idx is None:
            raise ReviewError(f"{d.where}: unknown key, no image of the data set has this path")
        if idx in chosen:
            raise ReviewError(f"{d.where}: a second decision for the same image ({chosen[idx].where})")
        chosen[idx] = d
    out: list[Sample] = []
    for i, s in enumerate(samples):
        d = chosen.get(i)
        if d is None or d.decision == "keep":
            out.append(s)
        elif d.decision == "relabel":
            out.append(replace(s, label=d.new_label, extra={**s.extra, "relabelled_from": s.label}))
    return out


def count_decisions(n_samples: int, decisions: Sequence[Decision]) -> ReviewCounts:
    kinds = [d.decision for d in decisions]
    return ReviewCounts(
        kept=kinds.count("keep"), excluded=kinds.count("exclude"), relabelled=kinds.count("relabel"),
        undecided=n_samples - len(kinds),
    )


def _cell(value: Any) -> str:
    """An extra column's value as manifest text: paths absolute (the manifest lives elsewhere), None empty."""
    if value is None:
        return ""
    return os.path.abspath(value) if isinstance(value, Path) else str(value)


def manifest_text(samples: Iterable[Sample]) -> str:
    """The manifest CSV: the known columns, then every extra column any sample carries (first-seen order)."""
    samples = list(samples)
    extras = list(dict.fromkeys(k for s in samples for k in s.extra if k and k not in MANIFEST_COLUMNS))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*MANIFEST_COLUMNS, *extras])
    for s in samples:
        w.writerow([
            os.path.abspath(s.path), s.label or "", os.path.abspath(s.mask_path) if s.mask_path else "",
            s.source or "", s.patient_id or "", s.split or "", *(_cell(s.extra.get(k)) for k in extras),
        ])
    return buf.getvalue()


def write_manifest(samples: Iterable[Sample], out_dir: str | Path) -> Path:
    path = Path(out_dir) / MANIFEST_FILE
    atomic_write_text(path, manifest_text(samples))
    return path


def check_outside_dataset(out_dir: str | Path, root: str | Path, samples: Sequence[Sample] = ()) -> None:
    """Refuse an output folder inside the data set: its root, or any folder holding its images or masks.

    Paths are compared after resolving symlinks, so ``--out`` given through a link, or as
    ``data/../data``, is caught too. Writing there would overwrite the data set's own manifest, or
    leave a CSV that the next loader reads as part of the data.
    """
    target = Path(os.path.realpath(out_dir))
    folders = {Path(os.path.realpath(root))}
    for s in samples:
        folders.update(Path(os.path.realpath(p)).parent for p in (s.path, s.mask_path) if p is not None)
    hit = next((f for f in (target, *target.parents) if f in folders), None)
    if hit is not None:
        raise ReviewError(
            f"--out {out_dir} lies inside the data set ({hit}); write the cleaned manifest to a folder outside it"
        )


def apply_review(
    decisions_csv: str | Path, dataset: str | Path, out_dir: str | Path, *, layout: str = "auto"
) -> tuple[Path, ReviewCounts]:
    """Load ``dataset``, apply ``decisions_csv`` and write ``out_dir/manifest.csv`` (+ ``review.json``)."""
    from lungaudit.config import CLASS_NAMES
    from lungaudit.data import load_dataset  # late: keeps the report stage importable on its own

    ds = load_dataset(dataset, layout)
    check_outside_dataset(out_dir, ds.root, ds.samples)
    classes = list(dict.fromkeys([*ds.class_names, *CLASS_NAMES]))
    decisions = read_decisions(decisions_csv, classes)
    try:
        cleaned = apply_decisions(ds.samples, decisions, classes, root=ds.root)
    except ReviewError as e:
        raise ReviewError(f"{decisions_csv}, {e}") from None
    counts = count_decisions(len(ds.samples), decisions)
    path = write_manifest(cleaned, out_dir)
    atomic_write_json(Path(out_dir) / "review.json", {
        "decisions": os.path.abspath(decisions_csv), "dataset": os.path.abspath(dataset), "layout": ds.layout,
        "n_input": len(ds.samples), "n_output": len(cleaned),
        "kept": counts.kept, "excluded": counts.excluded, "relabelled": counts.relabelled, "undecided": counts.undecided,
        "dataset_problems": len(ds.problems),
    })
    return path, counts
