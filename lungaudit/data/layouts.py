"""Discover samples in every supported on-disk layout and turn them into one :class:`Dataset`.

Layouts (``layout="auto"`` picks the first that matches, in this order):

* ``manifest``  - ``root`` is a ``.csv`` file, or ``root/manifest.csv`` exists. Columns
  ``path,label[,mask][,source][,patient_id][,split]``; any other column goes to ``Sample.extra``.
  Relative paths resolve against the CSV's folder.
* ``covid``     - the COVID-19 Radiography Database: ``ROOT/<CLASS>/images/*``, ``ROOT/<CLASS>/masks/*``
  and optional ``ROOT/<CLASS>.metadata.xlsx`` (source URL per image).
* ``segonly``   - ``ROOT/images/*`` (+ ``ROOT/masks/*``) with no labels, for segmentation training.
* ``folders``   - ``ROOT/<class>/*.png|jpg|...``, one class per folder, no masks.

Bad input is never a crash and never silent: each unusable file becomes a :class:`Problem` (path, kind,
reason). Only a data set with nothing usable raises :class:`DatasetError`.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lungaudit.config import CLASS_NAMES, DataConfig
from lungaudit.data.imageio import IMAGE_EXTENSIONS, ImageStats, validate_samples
from lungaudit.data.records import Dataset, Problem, Sample
from lungaudit.data.split import SPLITS, assign_splits
from lungaudit.utils import atomic_write_text

log = logging.getLogger(__name__)

LAYOUTS: tuple[str, ...] = ("auto", "covid", "folders", "manifest", "segonly")
MANIFEST_NAME = "manifest.csv"
MANIFEST_REQUIRED: tuple[str, ...] = ("path", "label")
MANIFEST_KNOWN: tuple[str, ...] = ("path", "label", "mask", "source", "patient_id", "split")
_IGNORED_FILES = frozenset({"thumbs.db", "desktop.ini"})
_SPLIT_SYNONYMS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}  # fmt: skip
# URL path parts too generic to name a source (kaggle.com/c/<name>, kaggle.com/datasets/<owner>/...).
_GENERIC_URL_PARTS = frozenset({"c", "d", "datasets", "dataset", "category", "competitions", "data", "en"})


class DatasetError(ValueError):
    """The data set as a whole cannot be used (missing, empty, unreadable, unknown layout).

    ``problems`` carries the per-file problems found before giving up, so callers can still report them.
    """

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


# ----------------------------------------------------------------------------------------- helpers


def _listdir(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as e:
        raise DatasetError(f"{folder}: cannot list folder ({e.strerror or e})") from None


def _candidate_files(folder: Path, problems: list[Problem]) -> list[Path]:
    """Image files in ``folder`` (not recursive). Hidden/OS junk files are skipped silently; files with
    a non-image extension are reported; files without an extension are kept (they may be DICOM)."""
    out = []
    for p in _listdir(folder):
        if p.name.startswith(".") or p.name.lower() in _IGNORED_FILES or not p.is_file():
            continue
        ext = p.suffix.lower()
        if ext in IMAGE_EXTENSIONS or ext == "":
            out.append(p)
        else:
            problems.append(Problem(p, f"unrecognised file type '{ext}' (skipped)", "image"))
    return out


def _has_images(folder: Path) -> bool:
    try:
        return any(
            p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
            for p in folder.iterdir()
        )
    except OSError:
        return False


def _subdirs(root: Path) -> list[Path]:
    return [p for p in _listdir(root) if p.is_dir() and not p.name.startswith(".")]


def _mask_index(mask_dir: Path) -> dict[str, Path]:
    """Mask lookup by lower-cased file name, and by stem (also with a ``_mask`` suffix stripped)."""
    index: dict[str, Path] = {}
    if not mask_dir.is_dir():
        return index
    for p in _listdir(mask_dir):
        if not p.is_file() or p.name.startswith("."):
            continue
        name = p.name.lower()
        stem = p.stem.lower()
        index.setdefault(name, p)
        index.setdefault("stem:" + stem, p)
        if stem.endswith("_mask"):
            index.setdefault("stem:" + stem[: -len("_mask")], p)
    return index


def _find_mask(index: dict[str, Path], image: Path) -> Path | None:
    return index.get(image.name.lower()) or index.get("stem:" + image.stem.lower())


def source_from_url(url: str) -> str | None:
    """A short readable source name from a URL: host (without ``www.``) plus its first meaningful path part.

    ``https://github.com/ieee8023/covid-chestxray-dataset`` -> ``github.com/ieee8023``;
    ``https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/data`` -> ``kaggle.com/rsna-pneumonia-detection-challenge``.
    """
    url = (url or "").strip()
    if not url:
        return None
    parsed = urlparse(url if "://" in url else "http://" + url)
    host = (parsed.hostname or "").lower()
    if host.startswith("www."):
        host = host[4:]
    parts = [p for p in parsed.path.split("/") if p and p.lower() not in _GENERIC_URL_PARTS]
    if not host:
        return url[:60]
    return f"{host}/{parts[0]}" if parts else host


def _read_metadata(xlsx: Path, problems: list[Problem]) -> dict[str, str]:
    """``<CLASS>.metadata.xlsx`` -> {lower-cased FILE NAME stem: source}. Malformed -> one Problem, {}."""
    try:
        from openpyxl import load_workbook

        wb = load_workbook(xlsx, read_only=True, data_only=True)
        try:
            ws = wb.worksheets[0]
            rows = ws.iter_rows(values_only=True)
            header = next(rows, None)
            if header is None:
                problems.append(Problem(xlsx, "metadata workbook is empty", "metadata"))
                return {}
            cols = {str(h).strip().upper(): i for i, h in enumerate(header) if h is not None}
            missing = [c for c in ("FILE NAME", "URL") if c not in cols]
            if missing:
                problems.append(
                    Problem(xlsx, f"metadata workbook lacks column(s) {', '.join(missing)}; sources unknown", "metadata")
                )
                return {}
            i_name, i_url = cols["FILE NAME"], cols["URL"]
            out: dict[str, str] = {}
            for row in rows:
                if row is None or len(row) <= max(i_name, i_url) or row[i_name] is None:
                    continue
                name = str(row[i_name]).strip()
                if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                    name = Path(name).stem
                name = name.lower()
                src = source_from_url(str(row[i_url])) if row[i_url] is not None else None
                if src:
                    out[name] = src
            return out
        finally:
            wb.close()
    except Exception as e:  # openpyxl raises zipfile/KeyError/InvalidFileException... for bad files
        problems.append(Problem(xlsx, f"cannot read metadata workbook: {type(e).__name__}: {e}", "metadata"))
        return {}


# ----------------------------------------------------------------------------------------- layouts


def detect_layout(root: Path) -> str:
    """Which layout ``root`` is in; raises :class:`DatasetError` when none matches."""
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return "manifest"
        raise DatasetError(f"{root}: a file was given, but only a .csv manifest can be read as a data set")
    if (root / MANIFEST_NAME).is_file():
        return "manifest"
    subdirs = _subdirs(root)
    if any((d / "images").is_dir() for d in subdirs if d.name not in ("images", "masks")):
        return "covid"
    if (root / "images").is_dir():
        return "segonly"
    if any(_has_images(d) for d in subdirs):
        return "folders"
    raise DatasetError(
        f"{root}: no images found in a known layout (expected <CLASS>/images/*.png, images/ + masks/, "
        f"<class>/*.png or a {MANIFEST_NAME})"
    )


def _discover_covid(root: Path, problems: list[Problem]) -> tuple[list[Sample], tuple[str, ...]]:
    samples: list[Sample] = []
    known = {c.lower(): c for c in CLASS_NAMES}
    for d in _subdirs(root):
        img_dir = d / "images"
        if d.name in ("images", "masks") or not img_dir.is_dir():
            continue  # e.g. the synthetic set's twins/ folder
        label = known.get(d.name.lower())
        if label is None:
            problems.append(
                Problem(
                    d,
                    f"unknown class folder '{d.name}' (expected one of {', '.join(repr(c) for c in CLASS_NAMES)}); "
                    "its images are skipped",
                    "class",
                )
            )
            continue
        xlsx = root / f"{d.name}.metadata.xlsx"
        sources = _read_metadata(xlsx, problems) if xlsx.is_file() else {}
        masks = _mask_index(d / "masks")
        for img in _candidate_files(img_dir, problems):
            mask = _find_mask(masks, img)
            if mask is None:
                problems.append(Problem(img, f"missing mask (expected masks/{img.name})", "mask"))
            samples.append(Sample(path=img, label=label, mask_path=mask, source=sources.get(img.stem.lower())))
    return samples, CLASS_NAMES


def _discover_segonly(root: Path, problems: list[Problem]) -> list[Sample]:
    masks = _mask_index(root / "masks")
    samples = []
    for img in _candidate_files(root / "images", problems):
        mask = _find_mask(masks, img)
        if mask is None:
            problems.append(Problem(img, f"missing mask (expected masks/{img.name})", "mask"))
        samples.append(Sample(path=img, label=None, mask_path=mask))
    return samples


def _discover_folders(root: Path, problems: list[Problem]) -> tuple[list[Sample], tuple[str, ...]]:
    samples = []
    names = []
    for d in _subdirs(root):
        files = _candidate_files(d, problems)
        if not files:
            continue
        names.append(d.name)
        samples.extend(Sample(path=f, label=d.name) for f in files)
    return samples, tuple(sorted(names))


def _resolve(base: Path, value: str) -> Path:
    p = Path(value)
    return (p if p.is_absolute() else base / p).resolve()


def _discover_manifest(csv_path: Path, problems: list[Problem]) -> tuple[list[Sample], tuple[str, ...]]:
    base = csv_path.parent
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{csv_path}: cannot read manifest ({e})") from None
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        raise DatasetError(f"{csv_path}: manifest is empty (no header row)")
    header = {h: (h or "").strip().lower() for h in reader.fieldnames}
    cols = set(header.values())
    missing = [c for c in MANIFEST_REQUIRED if c not in cols]
    if missing:
        raise DatasetError(
            f"{csv_path}: manifest lacks required column(s) {', '.join(missing)} "
            f"(header is {', '.join(reader.fieldnames)}; expected path,label[,mask][,source][,patient_id][,split])"
        )
    samples: list[Sample] = []
    for line, raw in enumerate(reader, start=2):
        row = {header[k]: (v or "").strip() for k, v in raw.items() if k is not None}
        if not row.get("path"):
            if any(row.values()):
                problems.append(Problem(csv_path, f"row {line}: empty path", "manifest"))
            continue
        path = _resolve(base, row["path"])
        if not path.is_file():
            problems.append(Problem(path, f"file not found (manifest row {line})", "image"))
            continue
        split = row.get("split") or None
        if split is not None:
            norm = _SPLIT_SYNONYMS.get(split.lower())
            if norm is None:
                problems.append(
                    Problem(path, f"bad split value {split!r} (manifest row {line}; expected one of {', '.join(SPLITS)})", "manifest")
                )
                continue  # dropping is safe; guessing a split could leak a test image into training
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
        samples.append(
            Sample(
                path=path,
                label=row.get("label") or None,
                mask_path=mask,
                source=row.get("source") or None,
                patient_id=row.get("patient_id") or None,
                split=split,
                extra=extra,
            )
        )
    labels = {s.label for s in samples if s.label is not None}
    class_names = CLASS_NAMES if labels <= set(CLASS_NAMES) else tuple(sorted(labels))
    return samples, class_names


# ----------------------------------------------------------------------------------------- public API


def scan_dataset(
    root: str | Path,
    layout: str = "auto",
    *,
    validate: bool = True,
    data_cfg: DataConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Dataset, ImageStats]:
    """:func:`load_dataset` that also returns what validation saw (image sizes, mask counts).

    With ``validate=False`` the stats are empty and no file is decoded.
    """
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: no such file or folder")
    root = root.resolve()
    if layout == "auto":
        layout = detect_layout(root)
    problems: list[Problem] = []
    if layout == "manifest":
        csv_path = root if root.is_file() else root / MANIFEST_NAME
        if not csv_path.is_file():
            raise DatasetError(f"{root}: layout 'manifest' needs a .csv file or a folder holding {MANIFEST_NAME}")
        samples, class_names = _discover_manifest(csv_path, problems)
        root = csv_path.parent
    else:
        if not root.is_dir():
            raise DatasetError(f"{root}: layout {layout!r} needs a folder")
        if layout == "covid":
            samples, class_names = _discover_covid(root, problems)
        elif layout == "segonly":
            if not (root / "images").is_dir():
                raise DatasetError(f"{root}: layout 'segonly' needs an images/ folder")
            samples, class_names = _discover_segonly(root, problems), ()
        else:
            samples, class_names = _discover_folders(root, problems)
    if not samples:
        raise DatasetError(f"{root}: no images found (layout {layout!r}; {len(problems)} problem file(s))", problems)

    stats = ImageStats()
    if validate:
        samples, bad, stats = validate_samples(samples, progress=progress)
        # An unreadable image is reported once, as an image problem, not also for its missing mask.
        dropped = {p.path for p in bad if p.kind == "image"}
        problems = [p for p in problems if not (p.kind == "mask" and p.path in dropped)] + bad
        if not samples:
            raise DatasetError(
                f"{root}: none of the images could be read ({len(problems)} problem file(s))", problems
            )

    cfg = data_cfg or DataConfig()
    if any(s.split is None for s in samples):
        samples = assign_splits(samples, cfg.val_frac, cfg.test_frac, cfg.seed)
    if problems:
        log.warning("%s: %d problem file(s) skipped or degraded", root, len(problems))
    return Dataset(root=root, layout=layout, samples=samples, problems=problems, class_names=tuple(class_names)), stats


def load_dataset(
    root: str | Path,
    layout: str = "auto",
    *,
    validate: bool = True,
    data_cfg: DataConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Dataset:
    """Read a data set in any supported layout (see module docstring) into a :class:`Dataset`.

    ``root``: a folder, or a manifest ``.csv``. ``Dataset.root`` is the folder (the CSV's folder for a
    manifest). Sample paths are absolute. With ``validate`` every image and mask is decoded once: bad
    images become problems and are dropped; bad masks become problems and the sample keeps
    ``mask_path=None``. Samples without a split get one from :func:`assign_splits` using ``data_cfg``'s
    seed and fractions. ``progress(done, total)`` reports validation progress.
    Raises :class:`DatasetError` for a missing, empty or wholly unreadable data set.
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
    layout: str = "auto",
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


__all__ = [
    "LAYOUTS",
    "DatasetError",
    "Inspection",
    "detect_layout",
    "inspect_dataset",
    "load_dataset",
    "scan_dataset",
    "source_from_url",
    "write_problems_csv",
]
