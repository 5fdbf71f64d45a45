"""The audit's resumable output store: ``audit.csv`` rows plus per-chunk partial aggregates.

Guarantees, for one output folder:

* **One writer.** An exclusive ``flock`` on ``.lock`` is held from open to close; a second audit into
  the same folder is refused at once (the lock dies with its process, so a killed audit leaves none).
* **No silent mixing.** ``identity.json`` records what the rows were computed from (checkpoint
  hashes, audit config, class names, the audited image list). Reopening a folder that holds rows
  without ``resume=True`` is refused; resuming with a different identity is refused and the message
  names every key that differs.
* **Flat memory.** Rows written are kept only as :class:`StoredRow` (the few fields the summary
  aggregates, about a tenth of a full row), so auditing 400k images does not hold 400k rows.
* **No row lost or doubled.** A chunk first writes its partial aggregates (``partials/<n>.npz``: the
  chunk's keys and its per-class heatmap sums), then appends its rows to ``audit.csv`` in one fsynced
  write. On reopening, a torn last line is cut, partials whose rows did not all land are deleted,
  and rows no partial covers are dropped from the CSV, so the CSV and the partials always describe
  the same images and the unfinished chunk is simply redone.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from lungaudit.audit.schema import AuditRow, SchemaError, csv_columns, row_from_csv
from lungaudit.utils import atomic_write_bytes, atomic_write_json

AUDIT_CSV = "audit.csv"
IDENTITY = "identity.json"
LOCK = ".lock"
PARTIALS = "partials"
CHUNK = 256  # rows per partial: a crash loses at most this much work


class StoreError(ValueError):
    """The folder cannot be written: busy, or holding rows of another audit. Names the folder."""


def _diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            show = (lambda v: f"{str(v)[:16]}…" if isinstance(v, str) and len(v) > 20 else repr(v))
            out.append(f"{prefix}{k}: {show(a)} -> {show(b)}")
    return out


class StoredRow:
    """What the summary reads of an :class:`AuditRow`, in a tenth of its memory (slots, probs as a tuple).

    It answers the attributes :func:`~lungaudit.audit.aggregate.aggregate_rows` reads with the row's
    own values, so a summary built from stored rows equals one built from the full rows.
    """

    __slots__ = ("key", "label", "pred", "source", "flagged", "marker_flip", "e_in", "e_in_tol", "flip", "trained_on",
                 "no_evidence", "region", "reasons", "_names", "_probs")  # fmt: skip

    def __init__(self, row: AuditRow, names: tuple[str, ...]) -> None:
        for k in self.__slots__[:-2]:
            setattr(self, k, getattr(row, k))
        self._names, self._probs = names, tuple(row.probs.get(c) for c in names)

    @property
    def probs(self) -> dict[str, float]:
        return {c: p for c, p in zip(self._names, self._probs) if p is not None}


class AuditStore:
    """Append-only, resumable rows of one audit, plus the per-class sums of out-of-lung heatmaps."""

    def __init__(self, out_dir: Path, class_names: Sequence[str], identity: dict[str, Any], *, resume: bool, map_side: int) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.class_names, self.columns = list(class_names), csv_columns(class_names)
        self._names = tuple(class_names)
        self._lock = _acquire(self.dir / LOCK)
        try:
            self._check_identity(identity, resume)
            self.done: list[StoredRow] = self._reconcile()
        except BaseException:
            self.close()
            raise
        self.done_keys = {r.key for r in self.done}
        self._rows: list[AuditRow] = []
        self._sums = torch.zeros(len(class_names), map_side, map_side)
        self._counts = torch.zeros(len(class_names))
        self._n_parts = len(list((self.dir / PARTIALS).glob("*.npz")))

    # ------------------------------------------------------------------ opening

    def _check_identity(self, identity: dict[str, Any], resume: bool) -> None:
        path, csv_path = self.dir / IDENTITY, self.dir / AUDIT_CSV
        has_rows = csv_path.is_file() and csv_path.stat().st_size > len(",".join(self.columns)) + 1
        if has_rows and not resume:
            raise StoreError(f"{self.dir} already holds audit rows; resume it (--resume) or audit into a new folder")
        if path.is_file() and resume:
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise StoreError(f"{path}: unreadable ({e}); audit into a new folder") from None
            diffs = _diff(old, identity)
            if diffs:
                raise StoreError(f"cannot resume {self.dir}: it was audited with something else ({'; '.join(diffs)})")
        elif has_rows:
            raise StoreError(f"cannot resume {self.dir}: it holds rows but no {IDENTITY} to check them against")
        if not has_rows:
            for stale in [csv_path, *(self.dir / PARTIALS).glob("*.npz")]:
                stale.unlink(missing_ok=True)
            atomic_write_json(path, identity)

    def _reconcile(self) -> list[StoredRow]:
        """Make CSV rows and partials describe the same images; returns the surviving rows."""
        (self.dir / PARTIALS).mkdir(exist_ok=True)
        csv_path = self.dir / AUDIT_CSV
        rows, torn = self._read_csv(csv_path) if csv_path.is_file() else ([], False)
        keys = {r.key for r in rows}
        covered: set[str] = set()
        for part in sorted((self.dir / PARTIALS).glob("*.npz")):
            try:
                part_keys = set(np.load(part)["keys"].tolist())
            except (OSError, ValueError, KeyError):
                part_keys = {""}  # unreadable: treat as incomplete
            if part_keys <= keys:
                covered |= part_keys
            else:
                part.unlink()  # its rows never all landed: the chunk is redone
        kept = [r for r in rows if r.key in covered]
        if torn or len(kept) != len(rows) or not csv_path.is_file():
            self._rewrite(kept)
        return kept

    def _read_csv(self, path: Path) -> tuple[list[StoredRow], bool]:
        """The parsed rows, and whether a torn last line (a crash mid-append) had to be cut off.

        Streamed line by line: reopening a 400k-row audit never holds its text or its full rows.
        """
        lines = _Lines()
        out = []
        try:
            with open(path, encoding="utf-8", newline="") as f:
                reader = csv.DictReader(lines.whole(f))
                for line, raw in enumerate(reader, start=2):
                    try:
                        out.append(StoredRow(row_from_csv(raw, self.class_names), self._names))
                    except SchemaError as e:
                        raise StoreError(f"{path}, line {line}: {e}") from None
                if reader.fieldnames is not None and reader.fieldnames != self.columns:
                    raise StoreError(f"{path} was written with other columns/classes; audit into a new folder")
        except UnicodeDecodeError:
            raise StoreError(f"{path} is not UTF-8 text; audit into a new folder") from None
        return out, lines.torn

    def _rewrite(self, keep: list[StoredRow]) -> None:
        """``audit.csv`` cut down to the rows of ``keep`` (rows are re-read: the store holds no full row)."""
        wanted = {r.key for r in keep}
        rows = self.rows() if (self.dir / AUDIT_CSV).is_file() else iter(())
        # Streams old -> temporary file; the old CSV is only replaced once the new one is complete.
        write_rows_csv(self.dir / AUDIT_CSV, (r for r in rows if r.key in wanted), self.class_names)

    def rows(self) -> Iterator[AuditRow]:
        """The full rows of ``audit.csv``, streamed (a torn last line, if any, left out)."""
        return iter_rows(self.dir / AUDIT_CSV, self.class_names)

    # ------------------------------------------------------------------ writing

    def add(self, rows: list[AuditRow], pred: torch.Tensor, unit_maps: torch.Tensor) -> int:
        """Buffer a batch's rows and add its (N, S, S) unit maps to the predicted classes' sums.

        Returns the number of chunks flushed (0 or 1).
        """
        self._rows += rows
        self._sums.index_add_(0, pred.cpu(), unit_maps.float().cpu())
        self._counts.index_add_(0, pred.cpu(), torch.ones(len(pred)))
        if len(self._rows) >= CHUNK:
            self.flush()
            return 1
        return 0

    @property
    def n_rows(self) -> int:
        """Rows written or buffered so far (the next row's running index)."""
        return len(self.done) + len(self._rows)

    def flush(self) -> None:
        if not self._rows:
            return
        buf = io.BytesIO()
        np.savez(buf, keys=np.array([r.key for r in self._rows]), sums=self._sums.numpy(), counts=self._counts.numpy())
        atomic_write_bytes(self.dir / PARTIALS / f"{self._n_parts:05d}.npz", buf.getvalue())
        cells = [r.to_csv(self.class_names) for r in self._rows]
        text = io.StringIO()
        csv.DictWriter(text, fieldnames=self.columns, lineterminator="\n").writerows(cells)
        with open(self.dir / AUDIT_CSV, "a", encoding="utf-8") as f:
            f.write(text.getvalue())
            f.flush()
            os.fsync(f.fileno())
        self._n_parts += 1
        # Keep what the CSV holds (numbers at its precision), not the in-memory rows: the summary is
        # then the same whether the audit ran straight through or resumed from the file, and equals
        # what report/gate/compare recompute from audit.csv.
        self.done += [StoredRow(row_from_csv(c, self.class_names), self._names) for c in cells]
        self.done_keys.update(r.key for r in self._rows)
        self._rows = []
        self._sums.zero_()
        self._counts.zero_()

    def mean_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """(C, S, S) sums and (C,) counts over every flushed partial."""
        sums = np.zeros(tuple(self._sums.shape), np.float64)
        counts = np.zeros(len(self.class_names), np.float64)
        for part in sorted((self.dir / PARTIALS).glob("*.npz")):
            data = np.load(part)
            if data["sums"].shape == sums.shape:
                sums += data["sums"]
                counts += data["counts"]
        return sums, counts

    def close(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_rows(path: Path, class_names: Sequence[str]) -> Iterator[AuditRow]:
    """The rows of an ``audit.csv`` one at a time; a torn last line (no newline) is skipped."""
    names = list(class_names)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(_Lines().whole(f))
        for line, raw in enumerate(reader, start=2):
            try:
                yield row_from_csv(raw, names)
            except SchemaError as e:
                raise StoreError(f"{path}, line {line}: {e}") from None


class _Lines:
    """Complete lines of a file being read; remembers whether a torn last line was left out."""

    def __init__(self) -> None:
        self.seen, self.torn = False, False

    def whole(self, f: Iterable[str]) -> Iterator[str]:
        for line in f:
            self.seen = True
            if line.endswith("\n"):
                yield line
            else:
                self.torn = True  # only the last line of a file can lack its newline


def write_rows_csv(path: Path, rows: Iterable[AuditRow], class_names: Sequence[str]) -> None:
    """``rows`` as a whole ``audit.csv`` (header included), streamed to a temporary file and renamed."""
    names = list(class_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # open() gives it the umask's mode, like the CSV it replaces
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=csv_columns(names), lineterminator="\n")
            writer.writeheader()
            writer.writerows(r.to_csv(names) for r in rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def lock_folder(folder: Path) -> int:
    """Hold ``folder/.lock`` exclusively (one writer per audit folder); release with :func:`unlock`."""
    folder.mkdir(parents=True, exist_ok=True)
    return _acquire(folder / LOCK)


def unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _acquire(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(f"{path.parent} is being written by another audit (lock {path.name} is held)") from None
    return fd


__all__ = [
    "AUDIT_CSV", "CHUNK", "IDENTITY", "AuditStore", "StoreError", "StoredRow", "iter_rows", "lock_folder", "unlock",
    "write_rows_csv",
]
