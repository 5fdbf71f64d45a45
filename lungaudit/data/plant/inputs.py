"""Find the real radiographs to plant on: image, lung mask and label of each, or why not.

Input layouts, read with :func:`lungaudit.data.layouts.load_dataset` (so they mean what they mean
everywhere else in lungaudit): ``images/`` + ``masks/`` paired by stem (the segmentation-only
layout), a manifest CSV with ``path,label,mask``, or the COVID-19 Radiography Database tree. A
folder of class folders without masks cannot be planted on: the cues must stay off the lungs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from lungaudit.data.layouts import DatasetError, detect_layout, load_dataset
from lungaudit.data.plant.labels import LabelTable, suffix_label
from lungaudit.data.records import Problem, Sample

PLANTABLE_LAYOUTS: tuple[str, ...] = ("segonly", "manifest", "covid")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_STEM = 100


@dataclass(frozen=True)
class RealImage:
    """One usable input: where its pixels and mask are, its label, and the stem it is written under."""

    image: Path
    mask: Path
    label: str
    origin: str  # the image's path relative to the input folder (posix), for the manifest
    stem: str  # sanitised and unique: the only input-derived part of an output path
    source: str | None = None
    patient_id: str | None = None


def safe_stem(name: str) -> str:
    """A file-name stem that cannot leave its folder: ``[A-Za-z0-9._-]`` only, no leading dot."""
    stem = _UNSAFE.sub("_", name).strip("._-")[:MAX_STEM]
    return stem or "image"


def _unique(stem: str, taken: set[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... not yet in ``taken`` (compared case-insensitively)."""
    out, k = stem, 1
    while out.lower() in taken:
        k += 1
        out = f"{stem}-{k}"
    taken.add(out.lower())
    return out


def _origin(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix() if path.is_relative_to(root) else path.name
    except ValueError:
        return path.name


def _label_of(
    sample: Sample, origin: str, table: LabelTable | None, suffixes: dict[str, str] | None
) -> tuple[str | None, str]:
    """The label from the labels CSV, else the suffix, else the input's own; (None, reason) if none."""
    if table is not None:
        return table.lookup(origin)
    if suffixes is not None:
        label = suffix_label(sample.path.stem, suffixes)
        known = ", ".join(f"_{k}" for k in suffixes)
        return (label, "") if label else (None, f"file name has no known label suffix ({known})")
    if sample.label:
        return sample.label, ""
    return None, "unlabeled: give --labels CSV or --suffix-labels"


def discover(
    root: Path, table: LabelTable | None = None, suffixes: dict[str, str] | None = None
) -> tuple[list[RealImage], list[Problem]]:
    """Every labelled image with a mask under ``root`` (sorted by origin), and the problems found.

    Raises :class:`DatasetError` when ``root`` is missing, in no known layout, or has no masks at all.
    Files are not decoded here; the writer reports images and masks that do not decode.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: no such file or folder")
    layout = detect_layout(root.resolve())
    if layout not in PLANTABLE_LAYOUTS:
        raise DatasetError(
            f"{root}: layout {layout!r} carries no lung masks; planting needs images/ + masks/, "
            "a manifest CSV with a mask column, or <CLASS>/images + <CLASS>/masks"
        )
    dataset = load_dataset(root, layout, validate=False)
    problems = list(dataset.problems)
    reported = {p.path for p in problems}
    found: list[tuple[str, Sample, str]] = []
    for s in dataset.samples:
        origin = _origin(s.path, dataset.root)
        label, why = _label_of(s, origin, table, suffixes)
        if label is None:
            problems.append(Problem(s.path, why, "class"))
        elif s.mask_path is None:
            if s.path not in reported:
                problems.append(Problem(s.path, "no lung mask: cues could not be kept off the lungs", "mask"))
        else:
            found.append((origin, s, label))
    taken: set[str] = set()
    out = [
        RealImage(s.path, s.mask_path, label, origin, _unique(safe_stem(s.path.stem), taken), s.source, s.patient_id)  # type: ignore[arg-type]
        for origin, s, label in sorted(found, key=lambda t: t[0])
    ]
    if table is not None:
        problems += table.unused_problems()
    return out, problems


__all__ = ["PLANTABLE_LAYOUTS", "RealImage", "discover", "safe_stem"]
