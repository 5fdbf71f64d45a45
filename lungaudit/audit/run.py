"""The audit of a data set with a trained run: loader -> step -> rows and overlays -> store -> summary.

The parts live in their own modules: :mod:`~lungaudit.audit.loader` (decode in workers),
:mod:`~lungaudit.audit.step` (one pure batch step on the device), :mod:`~lungaudit.audit.rows`
(typed rows), :mod:`~lungaudit.audit.overlay` (pictures of flagged images) and
:mod:`~lungaudit.audit.store` (resumable, locked output). This module wires them together.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from lungaudit import __version__
from lungaudit import distributed as dist
from lungaudit.audit.aggregate import aggregate_rows, write_mean_outside
from lungaudit.audit.batch import TENSOR_KEYS, audit_batch
from lungaudit.audit.loader import DecodeSpec, audit_loader
from lungaudit.audit.overlay import overlay_lines, overlay_name, render_overlay, write_overlay
from lungaudit.audit.rows import step_rows
from lungaudit.audit.schema import SCHEMA_VERSION, AuditRow, Summary
from lungaudit.audit.step import StepResult, StepSettings, outside_unit_maps
from lungaudit.audit.store import AuditStore
from lungaudit.config import AuditConfig, to_dict
from lungaudit.data.fingerprint import content_fingerprint, listing_fingerprint
from lungaudit.data.records import Dataset, Problem, Sample
from lungaudit.runs.restore import TrainedModels, load_run
from lungaudit.runs.runinfo import run_splits, sample_key, trained_on
from lungaudit.utils import atomic_write_json, sha256_file

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"


@dataclass
class AuditResult:
    out_dir: Path
    summary: Summary
    images_per_s: float
    resumed_rows: int = 0
    problems: list[Problem] = field(default_factory=list)


def audit_dataset(
    dataset: Dataset,
    run_dir: Path,
    out_dir: Path,
    cfg: AuditConfig | None = None,
    *,
    device: str = "auto",
    resume: bool = False,
    progress: Callable[[int, int], None] | None = None,
    num_workers: int = 1,
    max_pixels: int | None = None,
    stop_after_chunks: int | None = None,
) -> AuditResult:
    """Audit every sample of ``dataset`` with the models of ``run_dir`` into ``out_dir``.

    ``resume=False`` refuses a folder that already holds rows; ``resume=True`` continues one only if it
    was audited with the same checkpoints, config and images (see :class:`~lungaudit.audit.store.AuditStore`).
    ``max_pixels`` caps decoding (None: the reader's default, ``data.max_megapixels``).
    ``stop_after_chunks`` raises KeyboardInterrupt after that many flushed chunks (tests of resumption).
    Raises ``ValueError`` (and its subclasses) for input it cannot audit.

    Under torchrun each rank audits its shard into ``out_dir/shards/rank<k>-of-<n>/`` and rank 0
    merges them (see :mod:`~lungaudit.audit.shards`); every rank returns the merged result.
    """
    cfg = cfg or AuditConfig()
    dev = dist.rank_device(device)
    world = dist.init(dev)
    models = load_run(run_dir, dev)
    unknown = sorted({s.label for s in dataset.samples if s.label is not None and s.label not in models.class_names})
    if unknown:
        raise ValueError(f"the data has classes {unknown} that the model in {run_dir} was not trained on ({models.class_names})")
    settings = StepSettings.resolve(cfg, models)
    identity = audit_identity(models, cfg, dataset)
    if world.distributed:
        from lungaudit.audit.shards import audit_shards

        job = ShardJob(models, settings, cfg, dev, run_dir, num_workers, max_pixels, stop_after_chunks)
        return audit_shards(dataset, Path(out_dir), identity, job, resume=resume, progress=progress)
    _refuse_sharded(Path(out_dir))
    t0 = time.perf_counter()
    with AuditStore(Path(out_dir), models.class_names, identity, resume=resume, map_side=settings.size) as store:
        resumed = len(store.done)
        todo = [s for s in dataset.samples if sample_key(s.path, dataset.root) not in store.done_keys]
        spec = DecodeSpec(settings.size, not cfg.predict_masks, cfg.marker_side, max_pixels)
        problems = _audit_samples(todo, dataset.root, models, settings, spec, cfg, store, dev, progress, num_workers, stop_after_chunks, run_dir)
        store.flush()
        elapsed = time.perf_counter() - t0
        processed = len(store.done) - resumed
        rate = processed / elapsed if elapsed > 0 and processed else 0.0
        summary = build_summary(store, models, cfg, dataset, list(dataset.problems) + problems, run_dir, rate or None)
        atomic_write_json(Path(out_dir) / SUMMARY_FILE, summary.model_dump(mode="json"))
    return AuditResult(Path(out_dir), summary, rate, resumed, list(dataset.problems) + problems)


@dataclass(frozen=True)
class ShardJob:
    """What every rank of a sharded audit needs besides its samples: models, settings, device, limits."""

    models: TrainedModels
    settings: StepSettings
    cfg: AuditConfig
    device: torch.device
    run_dir: Path
    num_workers: int
    max_pixels: int | None
    stop_after_chunks: int | None

    def run(self, todo: Sequence[Sample], root: Path, store: AuditStore, progress: Callable[[int, int], None] | None) -> list[Problem]:
        """Audit ``todo`` into ``store``; returns the images that could not be decoded."""
        spec = DecodeSpec(self.settings.size, not self.cfg.predict_masks, self.cfg.marker_side, self.max_pixels)
        return _audit_samples(todo, root, self.models, self.settings, spec, self.cfg, store, self.device, progress,
                              self.num_workers, self.stop_after_chunks, self.run_dir)  # fmt: skip


def _refuse_sharded(out_dir: Path) -> None:
    """A folder audited under torchrun holds its rows in shards that only torchrun can resume."""
    from lungaudit.audit.shards import sharded_world_size
    from lungaudit.audit.store import StoreError

    n = sharded_world_size(out_dir)
    if n is not None:
        raise StoreError(
            f"{out_dir} holds an audit sharded over {n} processes; resume it with "
            f"torchrun --nproc_per_node {n} -m lungaudit audit ... --resume, or audit into a new folder"
        )


def audit_identity(models: TrainedModels, cfg: AuditConfig, dataset: Dataset) -> dict[str, Any]:
    """What the rows of an audit folder depend on; a resume must match it exactly."""
    return {
        "lungaudit_version": __version__,
        "checkpoints": _checkpoint_info(models),
        "config": to_dict(cfg),
        "class_names": list(models.class_names),
        "data": {"root": str(dataset.root), "images": len(dataset.samples), "listing": listing_fingerprint(dataset.samples, dataset.root)},
    }


def _audit_samples(
    todo: Sequence[Sample], root: Path, models: TrainedModels, s: StepSettings, spec: DecodeSpec, cfg: AuditConfig, store: AuditStore,
    dev: torch.device, progress: Callable[[int, int], None] | None, num_workers: int, stop_after: int | None, run_dir: Path,
) -> list[Problem]:  # fmt: skip
    """Decode, step, write; returns the images that could not be decoded."""
    splits = run_splits(run_dir)
    problems: list[Problem] = []
    processed, flushed = 0, 0
    for batch in audit_loader(todo, spec, cfg.batch_size, num_workers, pin=dev.type == "cuda"):
        ok = [not e for e in batch["error"]]
        problems += [Problem(todo[i].path, e, "image") for i, e in zip(batch["index"].tolist(), batch["error"]) if e]
        keep = torch.tensor(ok)
        samples = [todo[i] for i in batch["index"][keep].tolist()]
        if samples:
            result = audit_batch(models, {k: batch[k][keep] for k in (*TENSOR_KEYS, "has_mask")}, s, dev)
            keys = [sample_key(smp.path, root) for smp in samples]
            rows = step_rows(result, samples, keys, models.class_names, [trained_on(smp, splits) for smp in samples])
            if cfg.overlays:
                rows = _draw_flagged(store.dir, rows, result, batch["image"][keep][:, 0].numpy(), store.n_rows)
            flushed += store.add(rows, result.pred_full, outside_unit_maps(result, s.tolerance_px, s.fill_lungs))
        processed += len(batch["index"])
        if progress is not None:
            progress(processed, len(todo))
        if stop_after is not None and flushed >= stop_after:
            raise KeyboardInterrupt(f"simulated interruption after {flushed} chunk(s)")
    return problems


def _draw_flagged(out_dir: Path, rows: list[AuditRow], r: StepResult, images: np.ndarray, first_index: int) -> list[AuditRow]:
    """Write an overlay (and thumbnail) per flagged row; returns the rows with ``overlay`` set."""
    out = []
    heat = lungs = None
    for j, row in enumerate(rows):
        if row.flagged:
            if heat is None:  # only flagged images' pixels leave the device
                heat, lungs = r.heat.cpu().numpy(), r.lungs.cpu().numpy()
            rel = overlay_name(first_index + j, row.key)
            write_overlay(out_dir, rel, render_overlay(images[j], lungs[j], heat[j], row.marker_box, overlay_lines(row)))
            row = row.model_copy(update={"overlay": rel})
        out.append(row)
    return out


def _checkpoint_info(models: TrainedModels) -> dict[str, Any]:
    info: dict[str, Any] = {"cls": {"path": str(models.cls_path), "sha256": sha256_file(models.cls_path)}}
    info["seg"] = {"path": str(models.seg_path), "sha256": sha256_file(models.seg_path)} if models.seg_path else None
    return info


def build_summary(
    store: AuditStore, models: TrainedModels, cfg: AuditConfig, dataset: Dataset, problems: list[Problem],
    run_dir: Path, rate: float | None,
) -> Summary:  # fmt: skip
    """The validated ``summary.json`` of everything the store holds."""
    class_names = list(models.class_names)
    blocks = aggregate_rows(store.done, class_names)
    sums, counts = store.mean_sums()
    unreadable = sum(1 for p in problems if p.kind in ("image", "class"))
    return Summary.model_validate({
        "schema_version": SCHEMA_VERSION,
        "lungaudit_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(run_dir),
        "checkpoints": _checkpoint_info(models),
        "dataset": {
            "root": str(dataset.root), "layout": dataset.layout, "n_samples": len(dataset.samples),
            "fingerprint": content_fingerprint(dataset.samples, dataset.root),
            "splits": sorted({s.split for s in dataset.samples if s.split}),
        },
        "config": to_dict(cfg),
        "class_names": class_names,
        **blocks,
        "counts": {**blocks["counts"], "images": len(store.done) + unreadable, "problems": len(problems)},
        "mean_outside_images": write_mean_outside(store.dir, class_names, sums, counts),
        "problems": [{"path": str(p.path), "kind": p.kind, "reason": p.reason} for p in problems],
        "throughput_images_per_s": rate,
    })  # fmt: skip


__all__ = ["SUMMARY_FILE", "AuditResult", "ShardJob", "audit_dataset", "audit_identity", "build_summary"]
