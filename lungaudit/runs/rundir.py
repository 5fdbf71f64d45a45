"""Ultralytics-style run folders and the per-epoch metrics CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from lungaudit.utils import atomic_write_text


def increment_run_dir(project: Path, name: str, exist_ok: bool = False) -> Path:
    """``project/name``, or ``name2``, ``name3``... when it exists (unless ``exist_ok``)."""
    path = Path(project) / name
    if exist_ok or not path.exists():
        return path
    n = 2
    while (Path(project) / f"{name}{n}").exists():
        n += 1
    return Path(project) / f"{name}{n}"


def latest_run(project: Path, task: str = "train", marker: str = "weights/cls_best.pt") -> Path | None:
    """The most recently modified ``project/task/*`` folder holding ``marker``, or None."""
    runs = [p for p in (Path(project) / task).glob("*") if (p / marker).is_file()]
    return max(runs, key=lambda p: (p / marker).stat().st_mtime) if runs else None


class MetricsLog:
    """``metrics.csv`` with one row per (stage, epoch); rewritten atomically on every append.

    Rewriting the whole (small) file keeps it valid after a crash and lets a resumed run drop rows
    for epochs whose checkpoint never landed, so no epoch is ever listed twice.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if self.path.is_file():
            with open(self.path, newline="") as f:
                self.rows = list(csv.DictReader(f))

    def truncate(self, stage: str, last_epoch: int) -> None:
        """Forget rows of ``stage`` beyond ``last_epoch`` (epochs not covered by a checkpoint)."""
        self.rows = [r for r in self.rows if r["stage"] != stage or int(r["epoch"]) <= last_epoch]
        self._write()

    def append(self, row: dict[str, Any]) -> None:
        self.rows = [r for r in self.rows if not (r["stage"] == row["stage"] and int(r["epoch"]) == int(row["epoch"]))]
        self.rows.append({k: _fmt(v) for k, v in row.items()})
        self._write()

    def _write(self) -> None:
        columns: list[str] = []
        for r in self.rows:
            columns += [k for k in r if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v
