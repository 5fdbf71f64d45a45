"""Checkpoints: plain dicts of state dicts plus config, class names and version.

They are written with ``torch.save`` (atomically) and read with ``weights_only=True``, so loading a
checkpoint can never execute code. A checkpoint rebuilds its own model from the config it carries.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
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
    path: Path | None = field(default=None, compare=False)  # where it was loaded from (for messages); never saved

    @property
    def where(self) -> str:
        return f"checkpoint {self.path}" if self.path is not None else f"the {self.kind} checkpoint"


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
    _check_structure(raw, path)
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
        bad_epochs=int(raw.get("bad_epochs") or 0),
        optimizer_state=raw.get("optimizer_state"),
        scheduler_state=raw.get("scheduler_state"),
        extra=raw.get("extra") or {},
        version=str(raw.get("lungaudit_version", "?")),
        path=path,
    )


KINDS = ("seg", "cls")


def _check_structure(raw: dict[str, Any], path: Path) -> None:
    """Refuse a payload with the right header but the wrong shape, naming the file and the field.

    ``weights_only`` already stops code from running; this stops a hand-made or corrupted payload
    (no ``kind``, ``config`` as a list, a string epoch) from surfacing later as a KeyError/TypeError
    deep inside model building.
    """

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path} is a malformed lungaudit checkpoint: {what}")

    if raw.get("kind") not in KINDS:
        raise bad(f"'kind' must be one of {', '.join(KINDS)}, got {raw.get('kind')!r}")
    if not isinstance(raw.get("config"), dict) or not all(isinstance(k, str) for k in raw["config"]):
        raise bad(f"'config' must be a mapping of key names, got {type(raw.get('config')).__name__}")
    names = raw.get("class_names")
    if not isinstance(names, (list, tuple)) or not all(isinstance(c, str) for c in names):
        raise bad(f"'class_names' must be a list of strings, got {names!r:.80}")
    if len(set(names)) != len(names):
        raise bad(f"'class_names' repeats a name: {list(names)!r:.80}")
    state = raw.get("model_state")
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise bad("'model_state' must be a non-empty mapping of parameter names to tensors")
    for key, types in (("epoch", (int,)), ("best_metric", (int, float)), ("bad_epochs", (int, type(None)))):
        v = raw.get(key)
        if isinstance(v, bool) or not isinstance(v, types):
            raise bad(f"'{key}' must be a number, got {v!r:.40}")
    if raw["epoch"] < 0 or math.isnan(raw["best_metric"]):
        raise bad(f"'epoch' {raw['epoch']} / 'best_metric' {raw['best_metric']} out of range")
    for key in ("optimizer_state", "scheduler_state", "extra"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise bad(f"'{key}' must be a mapping or absent, got {type(raw[key]).__name__}")


def check_same_model(ckpt: Checkpoint, config: dict[str, Any], keys: tuple[str, ...], path: Path) -> None:
    """Refuse to resume when a model-shaping config key differs from the checkpoint's."""
    diffs = [f"{k}: checkpoint {ckpt.config.get(k)!r} vs config {config.get(k)!r}" for k in keys if ckpt.config.get(k) != config.get(k)]
    if diffs:
        raise CheckpointError(f"cannot resume from {path}: the model config changed ({'; '.join(diffs)})")
