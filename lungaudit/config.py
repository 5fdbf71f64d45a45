"""Typed configuration: frozen dataclasses loaded from commented YAML, overridden from the CLI.

YAML in ``configs/`` documents every key; the dataclass defaults here equal ``configs/default.yaml``
(a test keeps them in step), so the library also works when installed without the repository.
Unknown keys are an error, because a misspelt key silently keeping its default is the worst kind of
configuration bug.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

CLASS_NAMES: tuple[str, ...] = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
SHORTCUT_KINDS: tuple[str, ...] = ("markers", "shoulders", "source")


class ConfigError(ValueError):
    """A configuration file or override that cannot be applied."""


@dataclass(frozen=True)
class SynthConfig:
    n_per_class: int = 200  # images per class, all splits together
    size: int = 256  # output image side in pixels (masks are written at the same size)
    seed: int = 0
    shortcut_rate: float = 0.8  # P(shortcut matches the class) in train and val
    shortcuts: tuple[str, ...] = ("markers",)  # subset of SHORTCUT_KINDS
    val_frac: float = 0.15
    test_frac: float = 0.25
    n_sources: int = 3
    workers: int = 0  # 0 = one per CPU core
    severity_min: float = 0.25  # lowest disease severity; low values make some cases nearly invisible
    marker_vocab: str = "corner"  # corner: each corner has its own stamp words | shared: only the corner is a cue
    marker_plate: bool = True  # stamps on a dark box, legible on the bright abdomen too


@dataclass(frozen=True)
class DataConfig:
    root: str = ""  # data set folder or manifest CSV; "" = the synthetic default (generated into the cache)
    layout: str = "auto"  # auto | covid | folders | manifest | segonly
    seed: int = 0  # fixes the split when the data set carries none
    val_frac: float = 0.15
    test_frac: float = 0.15
    num_workers: int = 0  # DataLoader workers; 0 keeps everything in the main process


@dataclass(frozen=True)
class SegConfig:
    arch: str = "unet"
    encoder: str = "resnet18"
    encoder_depth: int = 4
    decoder_channels: tuple[int, ...] = (64, 32, 16, 8)
    image_size: int = 128
    epochs: int = 4
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    max_train_images: int = 400  # lungs are easy to learn; more images mostly cost time
    pretrained: bool = False  # opt-in ImageNet encoder weights (needs network)
    weights: str = ""  # start from a local state dict or a lungaudit seg checkpoint/run ("" = none)


@dataclass(frozen=True)
class ClsConfig:
    arch: str = "resnet18"
    image_size: int = 128
    output_stride: int = 16  # 16 keeps layer4 at stride 16 so Grad-CAM is 8x8 at 128 px
    mask_prob: float = 0.5  # P(a training image is shown lung-masked)
    mask_dilate_px: int = 3  # dilation of the lung mask (at model resolution) before masking
    fill_value: float = 0.0
    epochs: int = 14
    min_epoch_steps: int = 16  # an epoch is at least this many optimizer steps (a small set is repeated)
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    balance: str = "weights"  # weights | sampler | none: how classes of unequal size are balanced
    select_metric: str = "auc"  # auc | f1: validation score for best checkpoint and early stopping
    patience: int = 4  # early stopping: epochs without gain (0 = off), counted once out of chance
    stop_margin: float = 0.05  # the score must beat chance by this before patience counts
    min_epochs: int = 7  # earlier epochs are neither the best checkpoint nor counted by patience
    hflip: bool = False  # off: the heart sits on the left
    rotate_deg: float = 18.0
    scale: float = 0.05
    translate: float = 0.0  # random shift, fraction of the side
    brightness: float = 0.1
    contrast: float = 0.1
    gamma: float = 0.0  # random gamma in [1 - gamma, 1 + gamma] (0 = off)
    pretrained: bool = False
    weights: str = ""  # start from a local state dict or a lungaudit cls checkpoint/run ("" = none)
    input_norm: str = "auto"  # auto | none | imagenet: input normalisation inside the model


@dataclass(frozen=True)
class AuditConfig:
    cam: str = "gradcam"
    target_layer: str = "layer4"
    batch_size: int = 32
    tolerance_px: int = 8  # band (at image resolution of the audit) added to M for tolerant E_in
    out_threshold: float = 0.5  # flag when tolerant E_out is above this
    flag_on_flip: str = "auto"  # auto | true | false; auto = only for models trained with masking
    cam_score: str = "logprob"  # logit | logprob: the score whose gradient weighs the CAM's channels
    cam_floor: str = "mean"  # mean | none: subtract each heatmap's spatial mean before the ReLU energy
    marker_counterfactual: bool = True  # re-classify with the detected markers painted over
    border_frac: float = 0.12  # width of the border/corner band, as a fraction of the side
    predict_masks: bool = False
    overlays: bool = True
    image_size: int = 128  # resolution at which CAMs and masks are compared


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    name: str = "exp"
    project: str = "runs"
    synth: SynthConfig = field(default_factory=SynthConfig)
    data: DataConfig = field(default_factory=DataConfig)
    seg: SegConfig = field(default_factory=SegConfig)
    cls: ClsConfig = field(default_factory=ClsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)


T = TypeVar("T")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (inner, *_rest) = typing.get_args(tp)
        return tuple(_coerce(v.strip() if isinstance(v, str) else v, inner, key) for v in items if v != "")
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, args[0], key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp in (int, float, str):
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}") from None
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested mapping; unknown keys raise ``ConfigError``."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; valid: {', '.join(sorted(known))}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) for YAML/JSON."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def apply_overrides(cfg: T, overrides: list[str] | tuple[str, ...]) -> T:
    """Apply ``a.b=value`` strings (CLI ``--set``); values are parsed as YAML scalars."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a config section")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"override {key!r}: unknown key {parts[-1]!r}; valid: {', '.join(sorted(node))}")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return from_dict(type(cfg), data)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), cls: type[T] = TrainConfig) -> T:  # type: ignore[assignment]
    """Load ``cls`` from YAML (missing keys keep their defaults) and apply CLI overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
    cfg = from_dict(cls, data)
    return apply_overrides(cfg, overrides) if overrides else cfg


def save_config(cfg: Any, path: str | Path) -> None:
    from lungaudit.utils import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))


def default_config_path() -> Path | None:
    """``configs/default.yaml`` in the working directory, when run from a checkout."""
    p = Path("configs/default.yaml")
    return p if p.is_file() else None


__all__ = [
    "CLASS_NAMES",
    "SHORTCUT_KINDS",
    "AuditConfig",
    "ClsConfig",
    "ConfigError",
    "DataConfig",
    "SegConfig",
    "SynthConfig",
    "TrainConfig",
    "apply_overrides",
    "from_dict",
    "load_config",
    "replace",
    "save_config",
    "to_dict",
]
