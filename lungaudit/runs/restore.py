"""Rebuild trained models from a run folder's checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lungaudit.classification.model import build_classifier
from lungaudit.config import ClsConfig, ConfigError, SegConfig, from_dict
from lungaudit.segmentation.model import build_segmenter
from lungaudit.runs.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from lungaudit.device import prepare_model


@dataclass
class TrainedModels:
    classifier: nn.Module
    cls_cfg: ClsConfig
    class_names: list[str]
    cls_path: Path
    segmenter: nn.Module | None
    seg_cfg: SegConfig | None
    seg_path: Path | None


def restore(ckpt: Checkpoint, device: torch.device) -> nn.Module:
    """The checkpoint's model, rebuilt from its own config, in eval mode on ``device``.

    Raises ``CheckpointError`` naming the checkpoint when its config cannot build a model (an unknown
    architecture or encoder, a key out of range) or its weights do not fit that model.
    """
    try:
        if ckpt.kind == "cls":
            model = build_classifier(stage_config(ckpt), len(ckpt.class_names))
        elif ckpt.kind == "seg":
            model = build_segmenter(stage_config(ckpt))
        else:
            raise CheckpointError(f"{ckpt.where}: unknown checkpoint kind {ckpt.kind!r}")
    except KeyError as e:  # the model registries list the valid names in a KeyError (STYLE: smp's create_model)
        raise CheckpointError(f"{ckpt.where} cannot be rebuilt: {e.args[0] if e.args else e}") from None
    except CheckpointError:
        raise
    except ValueError as e:
        raise CheckpointError(f"{ckpt.where} cannot be rebuilt: {e}") from None
    try:
        model.load_state_dict(ckpt.model_state)
    except (RuntimeError, TypeError) as e:
        raise CheckpointError(f"{ckpt.where}: checkpoint weights do not fit the model its config describes: {e}") from None
    return prepare_model(model, device, inference=True).eval()


def stage_config(ckpt: Checkpoint) -> ClsConfig | SegConfig:
    """The checkpoint's config section as its dataclass (``pretrained`` off: the weights are in it)."""
    cls = ClsConfig if ckpt.kind == "cls" else SegConfig
    try:
        return from_dict(cls, {**ckpt.config, "pretrained": False}, prefix=f"{ckpt.kind}.")
    except ConfigError as e:
        raise CheckpointError(f"{ckpt.where} carries an invalid config: {e}") from None


def segmenter_checkpoint(source: str | Path) -> Path:
    """The segmenter checkpoint a ``--seg-from`` value names: a run folder or a ``.pt`` file.

    It is loaded once (safely) to prove it is a lungaudit U-Net; raises ``CheckpointError`` naming the
    path otherwise.
    """
    path = Path(source)
    if path.is_dir():
        candidates = [path / "weights" / "seg_best.pt", path / "seg_best.pt"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise CheckpointError(f"{path} holds no segmenter (expected {candidates[0]})")
        path = found
    load_checkpoint(path, kind="seg")
    return path


def load_run(run_dir: Path, device: torch.device, which: str = "best") -> TrainedModels:
    """Classifier (required) and segmenter (optional) from ``run_dir/weights/{cls,seg}_<which>.pt``."""
    weights = Path(run_dir) / "weights"
    cls_path = weights / f"cls_{which}.pt"
    if not cls_path.is_file():
        raise CheckpointError(f"{run_dir} has no classifier checkpoint ({cls_path} is missing); train one first")
    cls_ckpt = load_checkpoint(cls_path, kind="cls", map_location=device)
    seg_path = weights / f"seg_{which}.pt"
    seg_ckpt = load_checkpoint(seg_path, kind="seg", map_location=device) if seg_path.is_file() else None
    return TrainedModels(
        classifier=restore(cls_ckpt, device),
        cls_cfg=stage_config(cls_ckpt),  # type: ignore[arg-type]
        class_names=cls_ckpt.class_names,
        cls_path=cls_path,
        segmenter=restore(seg_ckpt, device) if seg_ckpt else None,
        seg_cfg=stage_config(seg_ckpt) if seg_ckpt else None,  # type: ignore[arg-type]
        seg_path=seg_path if seg_ckpt else None,
    )
