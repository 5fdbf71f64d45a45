"""Reading a data set in any registered layout: discover, validate, split; and what ``inspect`` counts."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lungaudit.config import DataConfig
from lungaudit.data.imageio import ImageStats, validate_samples
from lungaudit.data.layouts.base import AUTO, DatasetError, detect_layout, get_layout
from lungaudit.data.records import Dataset, Problem, Sample
from lungaudit.data.split import assign_splits
from lungaudit.utils import atomic_write_text

log = logging.getLogger(__name__)


def _validated(
    root: Path, samples: list[Sample], problems: list[Problem], progress: Callable[[int, int], None] | None, max_pixels: int
) -> tuple[list[Sample], list[Problem], ImageStats]:
    """Decode every image and mask once: unreadable images are dropped, bad masks cleared; all reported."""
    samples, bad, stats = validate_samples(samples, progress=progress, max_pixels=max_pixels)
    # An unreadable image is reported once, as an image problem, not also for its missing mask.
    dropped = {p.path for p in bad if p.kind == "image"}
    problems = [p for p in problems if not (p.kind == "mask" and p.path in dropped)] + bad
    if not samples:
        raise DatasetError(f"{root}: none of the images could be read ({len(problems)} problem file(s))", problems)
    return samples, problems, stats


def scan_dataset(
    root: str | Path,
    layout: str = AUTO,
    *,
    validate: bool = True,
    data_cfg: DataConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Dataset, ImageStats]:
    """:func:`load_dataset` that also returns what validation saw (image sizes, mask counts).

    With ``validate=False`` the stats are empty and no file is decoded.
    """
    if layout != AUTO:
        get_layout(layout)  # an unknown name fails before the path is even looked at
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: no such file or folder")
    root = root.resolve()
    entry = get_layout(detect_layout(root) if layout == AUTO else layout)
    problems: list[Problem] = []
    samples, class_names = entry.discover(root, problems)
    root = entry.data_root(root)
    if not samples:
        raise DatasetError(
            f"{root}: no images found (layout {entry.name!r}; {len(problems)} problem file(s))", problems
        )
    stats = ImageStats()
    cfg = data_cfg or DataConfig()
    if validate:
        samples, problems, stats = _validated(root, samples, problems, progress, cfg.max_pixels)
    if any(s.split is None for s in samples):
        samples = assign_splits(samples, cfg.val_frac, cfg.test_frac, cfg.seed)
    if problems:
        log.warning("%s: %d problem file(s) skipped or degraded", root, len(problems))
    dataset = Dataset(root=root, layout=entry.name, samples=samples, problems=problems, class_names=class_names)
    return dataset, stats


def load_dataset(
    root: str | Path,
    layout: str = AUTO,
    *,
    validate: bool = True,
    data_cfg: DataConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Dataset:
    """Read a data set in any registered layout (see :mod:`lungaudit.data.layouts`) into a :class:`Dataset`.

    ``root``: a folder, or a manifest ``.csv``. ``Dataset.root`` is the folder (the CSV's folder for a
    manifest). Sample paths are absolute. With ``validate`` every image and mask is decoded once: bad
    images become problems and are dropped; bad masks become problems and the sample keeps
    ``mask_path=None``. Samples without a split get one from :func:`assign_splits` using ``data_cfg``'s
    seed and fractions. ``progress(done, total)`` reports validation progress.
    Raises :class:`DatasetError` for a missing, empty or wholly unreadable data set, or an unknown layout.
    """
    dataset, _ = scan_dataset(root, layout, validate=validate, data_cfg=data_cfg, progress=progress)
    return dataset


def write_problems_csv(problems: list[Problem], path: str | Path) -> Path:
    """Write ``path,kind,reason`` rows (header included, even when empty) atomically; returns the path."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "kind", "reason"])
    for p in problems:
        w.writerow([str(p.path), p.kind, p.reason])
    path = Path(path)
    atomic_write_text(path, buf.getvalue())
    return path


@dataclass
class Inspection:
    """What ``lungaudit inspect`` shows: the data set, validation stats and the count tables."""

    dataset: Dataset
    stats: ImageStats
    by_class_split: dict[str, dict[str, int]] = field(default_factory=dict)  # label -> split -> n
    by_source: dict[str, int] = field(default_factory=dict)
    masks_present: int = 0
    masks_missing: int = 0


def inspect_dataset(
    root: str | Path,
    layout: str = AUTO,
    *,
    data_cfg: DataConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Inspection:
    """Load and validate ``root`` and count it by class x split, by source and by mask presence."""
    dataset, stats = scan_dataset(root, layout, validate=True, data_cfg=data_cfg, progress=progress)
    by_cs: dict[str, dict[str, int]] = {}
    by_src: dict[str, int] = {}
    for s in dataset.samples:
        lab = s.label if s.label is not None else "(unlabeled)"
        row = by_cs.setdefault(lab, {})
        row[s.split or "-"] = row.get(s.split or "-", 0) + 1
        src = s.source or "(unknown)"
        by_src[src] = by_src.get(src, 0) + 1
    order = [c for c in dataset.class_names if c in by_cs] + sorted(k for k in by_cs if k not in dataset.class_names)
    present = sum(s.mask_path is not None for s in dataset.samples)
    return Inspection(
        dataset=dataset,
        stats=stats,
        by_class_split={k: by_cs[k] for k in order},
        by_source=dict(sorted(by_src.items(), key=lambda kv: (-kv[1], kv[0]))),
        masks_present=present,
        masks_missing=len(dataset.samples) - present,
    )
