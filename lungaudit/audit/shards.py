"""A data set audited by several processes under torchrun: one resumable store per shard, one merge.

Layout of a sharded audit folder::

    shards/rank<k>-of-<n>/     rank k's own AuditStore (audit.csv, partials/, overlays/, identity.json)
    audit.csv                  the merged rows, in data-set order (written by rank 0)
    summary.json, mean_outside_*.png, overlays/, thumbs/, identity.json

Image ``i`` of the audited list goes to rank ``i % n``: disjoint, deterministic and balanced. Each
shard is an ordinary :class:`~lungaudit.audit.store.AuditStore`, so it is locked, checked against
its identity and resumable on its own: after a crash ``--resume`` lets every rank skip the rows its
shard already holds, so finished shards are not redone. The merge re-audits nothing: it reads the
shards' rows and partial heatmap sums and hands them to the same summary builder as a single
process, so the merged outputs equal a single-process audit's (heatmap means up to float summation
order; overlay files are linked under the single-process names).
"""

from __future__ import annotations

import heapq
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from lungaudit import distributed as dist
from lungaudit.audit.overlay import overlay_name, thumbnail_for
from lungaudit.audit.run import SUMMARY_FILE, AuditResult, ShardJob, audit_identity, build_summary
from lungaudit.audit.schema import AuditRow, Summary
from lungaudit.audit.store import (
    AUDIT_CSV, IDENTITY, PARTIALS, AuditStore, StoredRow, StoreError, iter_rows, lock_folder, unlock, write_rows_csv,
)
from lungaudit.data.records import Dataset, Problem
from lungaudit.runs.runinfo import sample_key
from lungaudit.utils import atomic_write_json

SHARDS = "shards"
_SHARD_NAME = re.compile(r"^rank(\d+)-of-(\d+)$")


def shard_dir(out_dir: Path, rank: int, size: int) -> Path:
    return Path(out_dir) / SHARDS / f"rank{rank}-of-{size}"


def sharded_world_size(out_dir: Path) -> int | None:
    """The number of processes whose shards ``out_dir`` holds, or None when it holds none.

    Raises ``StoreError`` for shards of several different world sizes (a folder mixed by hand).
    """
    found = {int(m.group(2)) for p in (Path(out_dir) / SHARDS).glob("rank*-of-*") if (m := _SHARD_NAME.match(p.name))}
    if len(found) > 1:
        raise StoreError(f"{out_dir / SHARDS} holds shards of audits by {sorted(found)} processes; audit into a new folder")
    return found.pop() if found else None


def _check_folder(out_dir: Path, size: int) -> None:
    """Refuse a folder holding a single-process audit, or shards cut for another number of processes."""
    n = sharded_world_size(out_dir)
    if n is not None and n != size:
        raise StoreError(
            f"{out_dir} holds an audit sharded over {n} processes; resume it with torchrun --nproc_per_node {n} "
            "(a shard is a fixed part of the data set), or audit into a new folder"
        )
    if n is None and any((out_dir / PARTIALS).glob("*.npz")):
        raise StoreError(f"{out_dir} holds a single-process audit; resume it without torchrun, or audit into a new folder")


@dataclass
class _ShardOutcome:
    problems: list[Problem]
    processed: int
    resumed: int
    elapsed_s: float


def audit_shards(
    dataset: Dataset, out_dir: Path, identity: dict, job: ShardJob, *, resume: bool, progress: Callable[[int, int], None] | None
) -> AuditResult:
    """Audit this rank's shard of ``dataset``; rank 0 then merges every shard into ``out_dir``.

    Every rank returns the merged result. Bad input on any rank (a busy or foreign folder) makes
    every rank raise, so none waits for the others in vain.
    """
    world = dist.world()
    lock, error = None, None
    if world.is_main:  # rank 0 holds the top folder from the check to the end of the merge
        try:
            _check_folder(out_dir, world.size)
            lock = lock_folder(out_dir)
        except StoreError as e:
            error = e
    dist.agree(error)
    try:
        mine = _audit_own_shard(dataset, out_dir, job, world, resume, progress)
        outcomes = dist.gather(mine)  # also the barrier: every shard is complete and closed
        elapsed, processed = max(o.elapsed_s for o in outcomes), sum(o.processed for o in outcomes)
        rate = processed / elapsed if elapsed > 0 and processed else 0.0
        problems = list(dataset.problems) + _in_order(dataset, [p for o in outcomes for p in o.problems])
        summary = _merge(dataset, out_dir, identity, job, world.size, problems, rate or None) if world.is_main else None
        summary = dist.broadcast(summary)
    finally:
        if lock is not None:
            unlock(lock)
    return AuditResult(out_dir, summary, rate, sum(o.resumed for o in outcomes), problems)


def _audit_own_shard(
    dataset: Dataset, out_dir: Path, job: ShardJob, world: dist.World, resume: bool, progress: Callable[[int, int], None] | None
) -> _ShardOutcome:
    """Images ``rank, rank + n, ...`` into this rank's own store, skipping rows it already holds."""
    part = replace(dataset, samples=dist.shard(dataset.samples, world.rank, world.size), problems=[])
    identity = audit_identity(job.models, job.cfg, part) | {"shard": {"rank": world.rank, "of": world.size}}
    t0 = time.perf_counter()
    store, error = None, None
    try:
        store = AuditStore(shard_dir(out_dir, world.rank, world.size), job.models.class_names, identity,
                           resume=resume, map_side=job.settings.size)  # fmt: skip
    except StoreError as e:
        error = e
    dist.agree(error)  # refuse on every rank before any rank spends time auditing
    assert store is not None
    with store:
        resumed = len(store.done)
        todo = [s for s in part.samples if sample_key(s.path, part.root) not in store.done_keys]
        problems = job.run(todo, part.root, store, progress if world.is_main else None)
        store.flush()
        return _ShardOutcome(problems, len(store.done) - resumed, resumed, time.perf_counter() - t0)


@dataclass
class MergedRows:
    """Every shard's rows and heatmap sums, as :func:`~lungaudit.audit.run.build_summary` reads a store."""

    dir: Path
    done: list[StoredRow]
    sums: np.ndarray
    counts: np.ndarray

    def mean_sums(self) -> tuple[np.ndarray, np.ndarray]:
        return self.sums, self.counts


def _merge(
    dataset: Dataset, out_dir: Path, identity: dict, job: ShardJob, size: int, problems: list[Problem], rate: float | None
) -> Summary:
    """Rank 0: the shards' rows in data-set order into ``audit.csv``, then ``summary.json`` as one process writes it."""
    names = job.models.class_names
    position = {sample_key(s.path, dataset.root): i for i, s in enumerate(dataset.samples)}
    merged, in_order = read_shards(out_dir, position, names, size, job.settings.size)
    write_merged_csv(out_dir, position, names, in_order)
    summary = build_summary(merged, job.models, job.cfg, dataset, problems, job.run_dir, rate)
    atomic_write_json(out_dir / SUMMARY_FILE, summary.model_dump(mode="json"))
    atomic_write_json(out_dir / IDENTITY, identity | {"shards": size})
    return summary


def read_shards(
    out_dir: Path, position: dict[str, int], class_names: Sequence[str], size: int, map_side: int
) -> tuple[MergedRows, dict[Path, bool]]:
    """The summary's view of ``size`` shards (rows in data-set order, summed heatmaps), and per shard
    folder whether its ``audit.csv`` is already in data-set order (so it can be streamed)."""
    found: list[tuple[int, StoredRow]] = []
    in_order: dict[Path, bool] = {}
    sums, counts = np.zeros((len(class_names), map_side, map_side)), np.zeros(len(class_names))
    for rank in range(size):
        folder = shard_dir(out_dir, rank, size)
        identity = json.loads((folder / IDENTITY).read_text(encoding="utf-8"))
        # Reopening runs the store's reconciliation, so a shard's rows and partial sums agree.
        with AuditStore(folder, class_names, identity, resume=True, map_side=map_side) as store:
            places = [position[r.key] for r in store.done]
            found += zip(places, store.done)
            in_order[folder] = all(a < b for a, b in zip(places, places[1:]))
            s, c = store.mean_sums()
            sums, counts = sums + s, counts + c
    found.sort(key=lambda t: t[0])
    return MergedRows(Path(out_dir), [r for _, r in found], sums, counts), in_order


def write_merged_csv(out_dir: Path, position: dict[str, int], class_names: Sequence[str], in_order: dict[Path, bool]) -> None:
    """The shards' full rows interleaved back into data-set order, streamed into ``out_dir/audit.csv``.

    A shard's rows are in data-set order unless an image that failed to decode was retried on resume
    (its row then comes last); such a shard is sorted in memory, the others are streamed.
    """

    def stream(folder: Path) -> Iterator[tuple[int, Path, AuditRow]]:
        rows = ((position[r.key], folder, r) for r in iter_rows(folder / AUDIT_CSV, class_names))
        return rows if in_order[folder] else iter(sorted(rows, key=lambda t: t[0]))

    merged = heapq.merge(*(stream(f) for f in in_order), key=lambda t: t[0])
    rows = (_relink_overlay(out_dir, folder, i, row) for i, (_, folder, row) in enumerate(merged))
    write_rows_csv(out_dir / AUDIT_CSV, rows, class_names)


def _relink_overlay(out_dir: Path, shard: Path, index: int, row: AuditRow) -> AuditRow:
    """The row's overlay (and thumbnail) under the name a single process gives the ``index``-th row."""
    if not row.overlay:
        return row
    rel = overlay_name(index, row.key)
    for src, dst in ((row.overlay, rel), (thumbnail_for(row.overlay), thumbnail_for(rel))):
        if (shard / src).is_file():
            _link(shard / src, out_dir / dst)
    return row.model_copy(update={"overlay": rel})


def _link(src: Path, dst: Path) -> None:
    """A hard link (a copy across file systems) put in place atomically."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _in_order(dataset: Dataset, problems: list[Problem]) -> list[Problem]:
    """Problems of all shards in data-set order, as one process meets them."""
    position = {str(s.path): i for i, s in enumerate(dataset.samples)}
    return sorted(problems, key=lambda p: position.get(str(p.path), len(position)))


__all__ = ["SHARDS", "MergedRows", "audit_shards", "read_shards", "shard_dir", "sharded_world_size", "write_merged_csv"]
