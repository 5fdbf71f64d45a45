"""Which images ``explain`` was asked about: files, folders and data sets, each with its lung mask if known.

A lung mask is *given* when the image belongs to a data set that has one: the run's own data set (the
image is looked up there), a data set folder or manifest named on the command line, or a COVID-19
Radiography Database folder (``<CLASS>/images/x.png`` beside ``<CLASS>/masks/x.png``). Every other
image gets the run's U-Net's mask.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from lungaudit.data.layouts import load_dataset
from lungaudit.data.layouts.base import DatasetError
from lungaudit.data.layouts.files import candidate_files, find_mask, mask_index
from lungaudit.data.records import Problem, Sample
from lungaudit.runs.runinfo import RunInfoError, read_run_info


def _norm(path: Path) -> str:
    return os.path.normcase(os.path.abspath(path))


def run_index(run_dir: Path) -> dict[str, Sample]:
    """The run's own data set by normalised path (listed, not decoded); {} when the run records none."""
    try:
        info = read_run_info(run_dir)
        if info is None:
            return {}
        dataset = load_dataset(info.data_source, info.layout, validate=False)
    except (RunInfoError, DatasetError, OSError):
        return {}  # an unreadable run record only costs the given masks: the U-Net draws them
    return {_norm(s.path): s for s in dataset.samples}


def _sibling_mask(path: Path) -> Path | None:
    """``<CLASS>/masks/<name>`` for an image in ``<CLASS>/images/`` (the Radiography Database layout)."""
    if path.parent.name.lower() != "images":
        return None
    return find_mask(mask_index(path.parent.parent / "masks"), path)


def _single_file(path: Path, index: dict[str, Sample]) -> Sample:
    known = index.get(_norm(path))
    if known is not None:
        return known
    return Sample(path=path, mask_path=_sibling_mask(path))


def _folder_or_manifest(path: Path, problems: list[Problem], index: Callable[[], dict[str, Sample]]) -> list[Sample]:
    """A data set in any layout; else a plain folder of images, each looked up like a single file."""
    try:
        return load_dataset(path, validate=False).samples
    except DatasetError as e:
        if path.is_file():
            problems.append(Problem(path, str(e), "manifest"))
            return []
    found = candidate_files(path, problems)
    if not found:
        problems.append(Problem(path, "no image files in this folder", "image"))
    return [_single_file(f, index()) for f in found]


def collect_inputs(paths: Sequence[str | Path], run_dir: Path) -> tuple[list[Sample], list[Problem]]:
    """The samples to explain, in the order given (each image once), and the arguments refused."""
    problems: list[Problem] = []
    cache: list[dict[str, Sample]] = []

    def index() -> dict[str, Sample]:  # the run's data set is listed once, and only when needed
        if not cache:
            cache.append(run_index(run_dir))
        return cache[0]

    samples: list[Sample] = []
    seen: set[str] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            problems.append(Problem(path, "no such file or folder", "image"))
            continue
        if path.is_dir() or path.suffix.lower() == ".csv":
            found = _folder_or_manifest(path, problems, index)
        else:
            found = [_single_file(path, index())]
        for s in found:
            if _norm(s.path) not in seen:
                seen.add(_norm(s.path))
                samples.append(s)
    return samples, problems


__all__ = ["collect_inputs", "run_index"]
