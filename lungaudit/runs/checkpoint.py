"""Checkpoints: plain dicts of state dicts plus config, class names and version.

They are written with ``torch.save`` (atomically) and read with ``weights_only=True``, so loading a
checkpoint can never execute code. A checkpoint rebuilds its own model from the config it carries.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lungaudit import __version__
from lungaudit.utils import atomic_write_bytes

FORMAT = "lungaudit-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here, with the reason."""


@dataclass
class Checkpoint:
    kind: str  # "seg" | "cls"
    config: dict[str, Any]  # the stage's config section as a plain dict
    class_names: list[str]
    model_state: dict[str, torch.Tensor]
    epoch: int  # epochs completed
    best_metric: float
    bad_epochs: int = 0
    optimizer_state: dict[str, Any] | None = None
    scheduler_state: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None
    version: str = __version__


def save_checkpoint(ckpt: Checkpoint, path: Path) -> None:
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "lungaudit_version": ckpt.version,
        "kind": ckpt.kind,
        "config": ckpt.config,
        "class_names": list(ckpt.class_names),
        "model_state": ckpt.model_state,
        "epoch": ckpt.epoch,
        "best_metric": ckpt.best_metric,
        "bad_epochs": ckpt.bad_epochs,
        "optimizer_state": ckpt.optimizer_state,
        "scheduler_state": ckpt.scheduler_state,
        "extra": ckpt.extra or {},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_checkpoint(
    path: Path | str,
    kind: str | None = None,
    class_names: list[str] | tuple[str, ...] | None = None,
    map_location: str | torch.device = "cpu",
) -> Checkpoint:
    """Load safely and refuse, with the reason, a checkpoint of the wrong kind, classes or format."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle errors, truncated zips, foreign objects refused by weights_only
        raise CheckpointError(f"checkpoint {path} cannot be loaded safely: {e.__class__.__name__}: {e}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a lungaudit checkpoint (no '{FORMAT}' header)")
    if raw.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {raw.get('format_version')}, this lungaudit ({__version__}) reads "
            f"format {FORMAT_VERSION}"
        )
    if kind is not None and raw["kind"] != kind:
        raise CheckpointError(f"{path} is a '{raw['kind']}' checkpoint, expected '{kind}'")
    if class_names is not None and list(raw["class_names"]) != list(class_names):
        raise CheckpointError(
            f"{path} was trained for classes {raw['class_names']}, but the data has {list(class_names)}"
        )
    return Checkpoint(
        kind=raw["kind"],
        config=raw["config"],
        class_names=list(raw["class_names"]),
        model_state=raw["model_state"],
        epoch=int(raw["epoch"]),
        best_metric=float(raw["best_metric"]),
        bad_epochs=int(raw.get("bad_epochs", 0)),
        optimizer_state=raw.get("optimizer_state"),
        scheduler_state=raw.get("scheduler_state"),
        extra=raw.get("extra") or {},
        version=str(raw["lungaudit_version"]),
    )


def check_same_model(ckpt: Checkpoint, config: dict[str, Any], keys: tuple[str, ...], path: Path) -> None:
    """Refuse to resume when a model-shaping config key differs from the checkpoint's."""
    diffs = [f"{k}: checkpoint {ckpt.config.get(k)!r} vs config {config.get(k)!r}" for k in keys if ckpt.config.get(k) != config.get(k)]
    if diffs:
        raise CheckpointError(f"cannot resume from {path}: the model config changed ({'; '.join(diffs)})")
