"""What the studies share: the run they study, decoding images tolerantly, lung masks and method specs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from lungaudit.audit.metrics import lung_only
from lungaudit.audit.step import lung_masks, resolve_floor
from lungaudit.config import TrainConfig
from lungaudit.data.arrays import resize_image, resize_mask
from lungaudit.data.imageio import ImageReadError, read_image, read_mask
from lungaudit.data.records import Problem, Sample
from lungaudit.device import resolve_device, to_device
from lungaudit.explain.cam import CAM_METHODS, build_method
from lungaudit.runs.data import run_config
from lungaudit.runs.restore import TrainedModels, load_run
from lungaudit.runs.rundir import increment_run_dir

# Short names people type for the long registry names (the issue's own ``--methods ...,ig,...``).
METHOD_ALIASES: dict[str, str] = {"ig": "integrated_gradients", "gbp": "guided_backprop", "ggcam": "guided_gradcam"}


class StudyInputError(ValueError):
    """Nothing usable to study; ``problems`` names every file that was refused and why."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


@dataclass
class RunContext:
    """A run opened for study: its models on ``device``, its resolved config and folder."""

    run_dir: Path
    models: TrainedModels
    cfg: TrainConfig
    device: torch.device

    @property
    def size(self) -> int:
        return self.models.cls_cfg.image_size

    @property
    def can_segment(self) -> bool:
        return self.models.segmenter is not None and self.models.seg_cfg is not None

    @property
    def tolerance_px(self) -> int:
        """The audit's tolerant-E_in band at the classifier's resolution (as ``StepSettings``)."""
        return max(1, round(self.cfg.audit.tolerance_px * self.size / 128))


def open_run(run_dir: str | Path, device: str = "auto", overrides: Sequence[str] = ()) -> RunContext:
    """Load a run's models and config; ``ValueError`` (naming the folder) when it is not a run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such run folder")
    dev = resolve_device(device)
    return RunContext(run_dir, load_run(run_dir, dev), run_config(run_dir, overrides), dev)


def output_dir(out_dir: str | Path | None, project: str | Path, task: str, name: str) -> Path:
    """``out_dir`` as given, else ``<project>/<task>/<name>`` (``name2``... when taken).

    ``name`` is the user's option, never a file or class name from the data.
    """
    return Path(out_dir) if out_dir is not None else increment_run_dir(Path(project) / task, name)


@dataclass
class Decoded:
    """Images that decoded, at the classifier's side S: ``images`` (N, S, S) float32 in [0, 1],
    ``masks`` (N, S, S) uint8, ``has_mask`` (N,) bool, their ``samples``, and the refused files."""

    samples: list[Sample]
    images: np.ndarray
    masks: np.ndarray
    has_mask: np.ndarray
    problems: list[Problem] = field(default_factory=list)


def decode_samples(samples: Sequence[Sample], size: int, max_pixels: int | None = None, can_segment: bool = True) -> Decoded:
    """Decode and resize each sample; an unreadable image is a problem (skipped), an unreadable mask
    a problem too (the run's U-Net then draws the lungs; without one, ``can_segment=False``, the image
    is skipped). Never raises for a bad file."""
    kept: list[Sample] = []
    images, masks, has = [], [], []
    problems: list[Problem] = []
    for s in samples:
        try:
            img = read_image(s.path, max_pixels)
        except ImageReadError as e:
            problems.append(Problem(s.path, e.reason, "image"))
            continue
        mask = np.zeros((size, size), np.uint8)
        ok = False
        if s.mask_path is not None:
            try:
                mask, ok = resize_mask(read_mask(s.mask_path, img.shape[:2], max_pixels), size), True
            except ImageReadError as e:
                problems.append(Problem(s.mask_path, f"{e.reason} (the U-Net's mask is used)", "mask"))
        if not ok and not can_segment:
            problems.append(Problem(s.path, "no usable lung mask given, and the run has no U-Net to draw one", "mask"))
            continue
        kept.append(s)
        images.append(resize_image(img, size))
        masks.append(mask)
        has.append(ok)
    shape = (len(kept), size, size)
    return Decoded(
        kept,
        np.stack(images).astype(np.float32) if kept else np.zeros(shape, np.float32),
        np.stack(masks) if kept else np.zeros(shape, np.uint8),
        np.array(has, bool),
        problems,
    )


def pick_images(samples: Sequence[Sample], n: int, seed: int) -> list[Sample]:
    """``n`` samples spread over the classes (round robin over a seeded shuffle of each class)."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s.label or "", []).append(s)
    pools = [[group[i] for i in rng.permutation(len(group))] for _, group in sorted(by_class.items())]
    out: list[Sample] = []
    while len(out) < n and any(pools):
        for pool in pools:
            if pool and len(out) < n:
                out.append(pool.pop(0))
    return out


def device_batch(ctx: RunContext, d: Decoded, sl: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x (B, 1, S, S) on the device, lungs (B, S, S) bool, given (B,) bool): given masks where there
    are, the run's U-Net's elsewhere (the audit's own :func:`~lungaudit.audit.step.lung_masks`)."""
    x = to_device(torch.from_numpy(d.images[sl][:, None]), ctx.device)
    masks = torch.from_numpy(d.masks[sl][:, None].astype(np.float32)).to(ctx.device)
    given = torch.from_numpy(d.has_mask[sl]).to(ctx.device)
    seg_size = ctx.models.seg_cfg.image_size if ctx.models.seg_cfg else None
    return x, lung_masks(ctx.models, x, masks, given, seg_size), given


def gated(ctx: RunContext, x: torch.Tensor, lungs: torch.Tensor) -> torch.Tensor:
    """The lung-masked input exactly as the classifier was trained on it (dilated gate, fill value)."""
    return lung_only(x, lungs, ctx.models.cls_cfg.mask_dilate_px, ctx.models.cls_cfg.fill_value)


def resolve_methods(methods: str | Sequence[str] | None) -> list[str]:
    """Registry names from a comma list or sequence (aliases such as ``ig`` allowed; ``all`` or None:
    every method); ``ValueError`` listing the valid names for an unknown one."""
    if methods is None:
        return CAM_METHODS.names()
    items = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods) if m.strip()]
    if items == ["all"]:
        return CAM_METHODS.names()
    out: list[str] = []
    for m in items:
        name = METHOD_ALIASES.get(m, m)
        if name not in CAM_METHODS:
            aliases = ", ".join(f"{k}={v}" for k, v in METHOD_ALIASES.items())
            raise ValueError(f"unknown explanation method {m!r}; valid: {', '.join(CAM_METHODS.names())} (aliases: {aliases})")
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError("no explanation method given")
    return out


def checked_options(
    methods: Sequence[str], options: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    """Per-method options, each checked by building the method (``ValueError`` naming the bad one)."""
    options = dict(options or {})
    stray = sorted(set(options) - set(methods))
    if stray:
        raise ValueError(f"options given for method(s) not requested: {', '.join(stray)}")
    for m in methods:
        build_method(m, options.get(m))
    return {m: dict(options.get(m, {})) for m in methods}


def parse_option(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``method.key=value`` strings (CLI ``--option``) -> {method: {key: value}}, values read as YAML."""
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        method, dot, opt = key.strip().partition(".")
        if not sep or not dot or not method or not opt:
            raise ValueError(f"option {item!r} is not of the form method.key=value (e.g. integrated_gradients.n_steps=16)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ValueError(f"option {item!r}: the value is not a YAML scalar") from None
        out.setdefault(METHOD_ALIASES.get(method, method), {})[opt] = value
    return out


def method_floor(ctx: RunContext, method: str) -> str:
    """The floor the audit would remove from ``method``'s maps under the run's ``audit.cam_floor``."""
    return resolve_floor(ctx.cfg.audit.cam_floor, method)


def finite(v: float) -> float | None:
    """JSON-safe number: None for NaN/inf (no evidence), never a silent 0."""
    return float(v) if math.isfinite(float(v)) else None


__all__ = [
    "METHOD_ALIASES", "Decoded", "RunContext", "StudyInputError", "checked_options", "decode_samples", "device_batch",
    "finite", "gated", "method_floor", "open_run", "output_dir", "parse_option", "pick_images", "resolve_methods",
]
