"""Start a stage from local weights (``cls.weights`` / ``seg.weights`` / ``--weights``), offline and safely.

A source is a previous run folder (its ``weights/<stage>_best.pt``), a lungaudit checkpoint, or a plain
state dict (a mapping of names to tensors, as ``torch.save(model.state_dict())`` writes, also wrapped
in ``{"state_dict": ...}`` or ``{"model": ...}``, with or without DataParallel's ``module.`` prefix).
Everything is read with ``torch.load(weights_only=True)``, so a file can never run code.

What may differ from the model, and what may not:

* the classification head (``fc.*``) or segmentation head (``segmentation_head.*``) when its shape
  differs or it is absent (other classes, ImageNet's 1000): it keeps its fresh initialisation;
* an RGB stem (3 input channels) is summed to the model's grey one, as for ``--pretrained``;
* a bare encoder state dict (e.g. a torchvision ResNet) for the U-Net is read as its ``encoder.*``;
* anything else missing, unexpected or of another shape is refused, naming the file and the keys.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from lungaudit.runs.checkpoint import FORMAT, CheckpointError, load_checkpoint

HEADS: dict[str, tuple[str, ...]] = {"cls": ("fc.",), "seg": ("segmentation_head.",)}
STEMS: dict[str, tuple[str, ...]] = {"cls": ("conv1.weight",), "seg": ("encoder.conv1.weight",)}


class WeightsError(ValueError):
    """Starting weights that cannot be used, with the file and the reason."""


@dataclass
class InitWeights:
    """What was loaded: the file, its hash, and what a checkpoint says about how it was trained."""

    path: Path
    sha256: str
    source: str  # "checkpoint" | "state_dict"
    state: dict[str, torch.Tensor]
    config: dict[str, Any] | None = None  # the checkpoint's stage config (None for a plain state dict)
    class_names: list[str] | None = None
    kept_fresh: list[str] = field(default_factory=list)  # model keys left at their initialisation
    adapted: list[str] = field(default_factory=list)  # keys converted (RGB stem summed to grey)

    def summary(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": self.sha256, "source": self.source,
                "kept_fresh": self.kept_fresh, "adapted": self.adapted}


def resolve_weights_path(source: str | Path, kind: str) -> Path:
    """A file as given; a run folder (or its ``weights/`` folder) -> its ``<kind>_best.pt``."""
    path = Path(source).expanduser()
    if path.is_dir():
        for candidate in (path / "weights" / f"{kind}_best.pt", path / f"{kind}_best.pt"):
            if candidate.is_file():
                return candidate
        raise WeightsError(f"{kind}.weights: {path} is a folder without a {kind} checkpoint (no weights/{kind}_best.pt)")
    if not path.is_file():
        raise WeightsError(f"{kind}.weights: {path} does not exist")
    return path


def read_weights(source: str | Path, kind: str) -> InitWeights:
    """Load ``source`` safely as a lungaudit ``kind`` checkpoint or a plain state dict."""
    path = resolve_weights_path(source, kind)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickles with code, truncated zips, non-torch files
        raise WeightsError(f"{kind}.weights: {path} cannot be loaded safely as weights ({e.__class__.__name__}: {e})") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        try:
            ckpt = load_checkpoint(path, kind=kind)
        except CheckpointError as e:
            raise WeightsError(f"{kind}.weights: {e}") from None
        return InitWeights(path, digest, "checkpoint", dict(ckpt.model_state), ckpt.config, ckpt.class_names)
    state = _unwrap_state_dict(raw)
    if state is None:
        raise WeightsError(
            f"{kind}.weights: {path} is neither a lungaudit checkpoint nor a state dict (a mapping of names to tensors)"
        )
    return InitWeights(path, digest, "state_dict", state)


def _unwrap_state_dict(raw: Any) -> dict[str, torch.Tensor] | None:
    for candidate in (raw, *(raw.get(k) for k in ("state_dict", "model", "model_state") if isinstance(raw, dict))):
        if isinstance(candidate, Mapping) and candidate and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in candidate.items()
        ):
            prefix = "module."  # nn.DataParallel / DistributedDataParallel
            if all(k.startswith(prefix) for k in candidate):
                return {k[len(prefix):]: v for k, v in candidate.items()}
            return dict(candidate)
    return None


def load_into(model: nn.Module, weights: InitWeights, kind: str) -> InitWeights:
    """Copy ``weights`` into ``model`` (in place) under the rules of the module docstring."""
    target = model.state_dict()
    source, may_stay_fresh = _as_encoder(weights.state, target) if kind == "seg" else (weights.state, HEADS[kind])
    fitted: dict[str, torch.Tensor] = {}
    wrong_shape, unexpected = [], []
    for key, value in source.items():
        if key not in target:
            if not key.startswith(HEADS[kind]):
                unexpected.append(key)
            continue
        if key in STEMS[kind] and value.ndim == 4 and value.shape[1] == 3 and target[key].shape[1] == 1:
            value = value.sum(dim=1, keepdim=True)  # RGB stem -> grey, as build_classifier does
            weights.adapted.append(key)
        if value.shape != target[key].shape:
            if not key.startswith(may_stay_fresh):
                wrong_shape.append(f"{key} {tuple(value.shape)} vs model {tuple(target[key].shape)}")
            continue
        fitted[key] = value.to(target[key].dtype)
    # BatchNorm's step counter is absent from some older state dicts and carries no learnt value.
    missing = [k for k in target if k not in source and not k.startswith(may_stay_fresh) and not k.endswith("num_batches_tracked")]
    problems = [f"{len(v)} {what}: {', '.join(v[:4])}{' ...' if len(v) > 4 else ''}"
                for what, v in (("of another shape", wrong_shape), ("missing", missing), ("unexpected", unexpected)) if v]
    if problems:
        raise WeightsError(f"{kind}.weights: {weights.path} does not fit this {kind} model; keys " + "; ".join(problems))
    weights.kept_fresh = [k for k in target if k not in fitted and not k.endswith("num_batches_tracked")]
    model.load_state_dict({**target, **fitted})
    return weights


def _as_encoder(state: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """A U-Net's weights as given, or a bare backbone's (e.g. a torchvision ResNet) read as its encoder.

    Returns the state to load and the key prefixes that may keep their initialisation: the head,
    and for a bare backbone also the decoder it never had.
    """
    if any(k in target for k in state):
        return state, HEADS["seg"]
    backbone = {f"encoder.{k}": v for k, v in state.items() if not k.startswith("fc.")}  # drop its classifier head
    if any(k in target for k in backbone):
        return backbone, HEADS["seg"] + ("decoder.",)
    return state, HEADS["seg"]


def input_norm_of(weights: InitWeights) -> str | None:
    """The input normalisation a checkpoint was trained with; None when a state dict cannot say."""
    if weights.source != "checkpoint":
        return None
    norm = (weights.config or {}).get("input_norm", "none")  # checkpoints before the key: no normalisation
    return "none" if norm == "auto" else str(norm)


def start_from(model: nn.Module, source: str | Path, kind: str) -> InitWeights:
    """Read ``source`` and load it into ``model``; raises :class:`WeightsError` naming the file."""
    return load_into(model, read_weights(source, kind), kind)


def weights_for_stage(source: str | Path, stage: str) -> dict[str, str]:
    """``--weights`` as ``{"cls": path, "seg": path}`` config values for the stage(s) being trained.

    A run folder gives each trained stage its own checkpoint; a lungaudit checkpoint names its
    stage; a plain state dict cannot, so it needs ``--stage cls`` or ``--stage seg``.
    """
    kinds = ("seg", "cls") if stage == "all" else (stage,)
    path = Path(source).expanduser()
    if path.is_dir():
        found = {k: str(path) for k in kinds if any((p / f"{k}_best.pt").is_file() for p in (path / "weights", path))}
        if not found:
            raise WeightsError(f"--weights: {path} holds no {' or '.join(kinds)} checkpoint (weights/<stage>_best.pt)")
        return found
    if not path.is_file():
        raise WeightsError(f"--weights: {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"--weights: {path} cannot be loaded safely as weights ({e.__class__.__name__}: {e})") from None
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        kind = str(raw.get("kind"))
        if kind not in kinds:
            raise WeightsError(f"--weights: {path} is a {kind!r} checkpoint, but --stage {stage} does not train that model")
        return {kind: str(path)}
    if stage == "all":
        raise WeightsError(
            f"--weights: {path} is a plain state dict, which does not say which model it is for; "
            "add --stage cls or --stage seg (or use --set cls.weights=... / --set seg.weights=...)"
        )
    return {stage: str(path)}
