"""What a training run saw: its data set, layout, segmenter origin and the split of every image.

Training writes ``run.json`` and ``splits.csv`` into the run folder before it trains; the audit and
the services read them, so ``lungaudit audit --run R`` audits the run's own data with the run's own
split, and can say which audited images the model was trained on.
"""

from __future__ import annotations

import logging

import csv
import datetime as dt
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from lungaudit import __version__
from lungaudit.data.records import Sample
from lungaudit.utils import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

RUN_INFO = "run.json"
SPLITS_CSV = "splits.csv"
SPLITS_COLUMNS = ("path", "label", "split")


class RunInfoError(ValueError):
    """``run.json`` or ``splits.csv`` missing or malformed; the message names the file."""


@dataclass(frozen=True)
class RunInfo:
    data_root: str  # absolute folder (a manifest's folder for the manifest layout)
    data_source: str  # what was given: the folder or the manifest CSV, absolute
    layout: str
    n_images: int
    seg_from: dict[str, str] | None = None  # {"path", "sha256"} when the segmenter came from elsewhere
    created: str = ""
    lungaudit_version: str = __version__


def _norm(path: str | Path) -> str:
    return os.path.normcase(os.path.abspath(path))


def sample_key(path: str | Path, root: str | Path) -> str:
    """The image's path relative to the data root (forward slashes), or absolute when outside it."""
    rel = os.path.relpath(_norm(path), _norm(root))
    return Path(path).resolve().as_posix() if rel.startswith("..") else Path(rel).as_posix()


def write_run_info(run_dir: Path, info: RunInfo, samples: Sequence[Sample]) -> None:
    """``run.json`` plus ``splits.csv`` (one row per image: path relative to the data root, label, split)."""
    stamped = info if info.created else RunInfo(**{**asdict(info), "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    atomic_write_json(Path(run_dir) / RUN_INFO, asdict(stamped))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SPLITS_COLUMNS)
    for s in samples:
        w.writerow([sample_key(s.path, info.data_root), s.label or "", s.split or ""])
    atomic_write_text(Path(run_dir) / SPLITS_CSV, buf.getvalue())


def read_run_info(run_dir: Path) -> RunInfo | None:
    """The run's ``run.json``, or None for a run written before it existed."""
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        return None
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
        return RunInfo(**raw)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
        raise RunInfoError(f"{path}: malformed run record ({e})") from None


def read_splits(run_dir: Path, data_root: str | Path) -> dict[str, str]:
    """Normalised absolute image path -> the split the run put it in."""
    path = Path(run_dir) / SPLITS_CSV
    if not path.is_file():
        raise RunInfoError(f"{path}: missing (the run does not record its split)")
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise RunInfoError(f"{path}: cannot read ({e})") from None
    out: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        if not row.get("path") or row.get("split") not in ("train", "val", "test"):
            raise RunInfoError(f"{path}, line {line}: expected a path and a split of train/val/test, got {row}")
        p = Path(row["path"])
        out[_norm(p if p.is_absolute() else Path(data_root) / p)] = row["split"]
    return out


def run_splits(run_dir: Path) -> dict[str, str]:
    """The run's image -> split table, or {} for a run that does not record one (older runs).

    Marks the images a run trained on; an unreadable record is logged, not fatal (nothing is marked).
    """
    try:
        info = read_run_info(run_dir)
        return read_splits(run_dir, info.data_root) if info else {}
    except RunInfoError as e:
        log.warning("%s; images the run trained on cannot be recognised", e)
        return {}


def trained_on(sample: Sample, run_splits: dict[str, str]) -> bool:
    """Whether the run trained on the sample or selected its checkpoint with it (train or val)."""
    return run_splits.get(_norm(sample.path)) in ("train", "val")


def apply_run_splits(samples: Sequence[Sample], run_splits: dict[str, str]) -> list[Sample]:
    """The samples with the run's split (None for images the run never saw)."""
    from dataclasses import replace

    return [replace(s, split=run_splits.get(_norm(s.path))) for s in samples]


__all__ = [
    "RUN_INFO", "SPLITS_CSV", "RunInfo", "RunInfoError", "apply_run_splits", "read_run_info", "read_splits",
    "sample_key", "trained_on", "write_run_info",
]
