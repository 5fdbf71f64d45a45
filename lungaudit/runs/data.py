"""What a trained run was trained with: its resolved config and its data set, split as the run split it.

The audit and the studies of a run (explain, sanity, features) all follow the run: by default its own
data set, always its own split for the images it saw, and its own ``config.yaml``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from lungaudit.config import TrainConfig, apply_overrides, load_config
from lungaudit.data.layouts import load_dataset
from lungaudit.data.records import Dataset
from lungaudit.data.split import SPLITS
from lungaudit.runs.runinfo import apply_run_splits, read_run_info, read_splits


def run_config(run_dir: Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """The run's own resolved config (older runs without one: the defaults), with ``overrides``."""
    path = Path(run_dir) / "config.yaml"
    cfg = load_config(path) if path.is_file() else TrainConfig()
    return apply_overrides(cfg, list(overrides)) if overrides else cfg


def run_dataset(
    run_dir: Path,
    data: Any = None,
    layout: str | None = None,
    run_cfg: TrainConfig | None = None,
    split: str | None = None,
    validate: bool = True,
) -> Dataset:
    """The data to study or audit with a run, its splits taken from the run wherever it saw the image.

    ``data``: a folder, a manifest CSV or a loaded ``Dataset``; default the run's own data set (from
    its ``run.json``). ``split``: keep only that split (``ValueError`` when empty). ``validate=False``
    lists the files without decoding them (their errors surface when they are read).
    """
    run_cfg = run_cfg or run_config(run_dir)
    info = read_run_info(run_dir)
    if data is None:
        if info is None:
            raise ValueError(f"{run_dir} does not record its data set (a run from an older lungaudit); pass the data set")
        data, layout = info.data_source, layout or info.layout
    dataset = data if isinstance(data, Dataset) else load_dataset(data, layout or "auto", data_cfg=run_cfg.data, validate=validate)
    if info is not None:
        run_splits = read_splits(run_dir, info.data_root)
        own = apply_run_splits(dataset.samples, run_splits)
        # Images the run never saw keep the data set's own split, unless the data *is* the run's.
        same = Path(dataset.root).resolve() == Path(info.data_root).resolve()
        dataset = replace(dataset, samples=[o if (same or o.split) else s for o, s in zip(own, dataset.samples)])
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        dataset = replace(dataset, samples=dataset.split(split))
        if not dataset.samples:
            raise ValueError(f"{dataset.root} has no images in split {split!r}")
    return dataset


__all__ = ["run_config", "run_dataset"]
