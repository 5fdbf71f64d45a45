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
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

CLASS_NAMES: tuple[str, ...] = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
CACHE_MODES: tuple[str, ...] = ("auto", "memory", "disk")
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
    max_megapixels: float = 50.0  # images above this are refused from their header, before decoding (0 = no cap)
    cache: str = "auto"  # auto | memory | disk: decoded splits held in RAM, or in a memory-mapped cache on disk

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)


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
    fill_lungs: bool = True  # tolerant E_in counts each lung's holes and bites (tissue the segmenter missed)
    out_threshold: float = 0.5  # flag when tolerant E_out is above this
    flag_on_flip: str = "auto"  # auto | true | false; auto = only for models trained with masking
    cam_score: str = "logprob"  # logit | logprob: the score whose gradient weighs the CAM's channels
    cam_floor: str = "auto"  # auto | mean | none: subtract each heatmap's spatial mean before the energy; auto per method kind
    cam_options: dict[str, Any] = field(default_factory=dict)  # keyword options of the audit.cam method (e.g. n_steps)
    marker_counterfactual: bool = True  # re-classify with the detected markers painted over
    border_frac: float = 0.12  # width of the border/corner band, as a fraction of the side
    predict_masks: bool = False
    overlays: bool = True
    marker_side: int = 512  # longest side the burned-in marker search runs at (cost independent of image size)


@dataclass(frozen=True)
class DistConfig:
    sync_bn: bool = False  # under torchrun on GPUs: BatchNorm statistics over the global batch


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
    dist: DistConfig = field(default_factory=DistConfig)


T = TypeVar("T")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is dict or tp is dict:
        return _coerce_mapping(value, key)
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


def _coerce_mapping(value: Any, key: str) -> dict[str, Any]:
    """A free-form option mapping (``audit.cam_options``): string keys, YAML scalar or list values.

    An empty string or ``none`` is the empty mapping, so ``--set audit.cam_options=`` resets it.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null", "{}")):
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping such as {{n_steps: 16}}, got {value!r}")
    bad = [k for k, v in value.items() if not isinstance(k, str) or isinstance(v, dict)]
    if bad:
        raise ConfigError(f"{key}: option names must be strings with scalar or list values, got {bad!r}")
    return dict(value)


# Valid ranges of numeric keys (inclusive; None = unbounded). A value outside, or NaN, is refused
# with the key named, before any work starts.
LIMITS: dict[str, tuple[float | None, float | None]] = {
    "synth.n_per_class": (1, None), "synth.size": (32, 8192), "synth.shortcut_rate": (0, 1),
    "synth.val_frac": (0, 0.9), "synth.test_frac": (0, 0.9), "synth.n_sources": (1, 26), "synth.workers": (0, 256),
    "synth.severity_min": (0, 1),
    "data.val_frac": (0, 0.9), "data.test_frac": (0, 0.9), "data.num_workers": (0, 256), "data.max_megapixels": (0, None),
    "seg.encoder_depth": (3, 5), "seg.image_size": (32, 4096), "seg.epochs": (1, None), "seg.batch_size": (1, None),
    "seg.lr": (0, 10), "seg.weight_decay": (0, 10), "seg.max_train_images": (0, None),
    "cls.image_size": (32, 4096), "cls.mask_prob": (0, 1), "cls.mask_dilate_px": (0, 512), "cls.fill_value": (0, 1),
    "cls.epochs": (1, None), "cls.batch_size": (1, None), "cls.lr": (0, 10), "cls.weight_decay": (0, 10),
    "cls.patience": (0, None), "cls.rotate_deg": (0, 180), "cls.scale": (0, 0.9), "cls.brightness": (0, 1),
    "cls.contrast": (0, 1),
    "audit.batch_size": (1, None), "audit.tolerance_px": (0, 512), "audit.out_threshold": (0, 1),
    "audit.border_frac": (0, 0.49), "audit.marker_side": (32, 16384),
}  # fmt: skip


def _check_limits(obj: Any, prefix: str) -> None:
    for f in fields(obj):
        bounds = LIMITS.get(prefix + f.name)
        if bounds is None:
            continue
        v, (lo, hi) = getattr(obj, f.name), bounds
        ok = (lo is None or v >= lo) and (hi is None or v <= hi)  # False for NaN
        if not ok:
            span = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
            raise ConfigError(f"{prefix}{f.name}: {v!r} is outside its valid range {span}")


def _check_sections(cfg: Any) -> None:
    """Cross-key rules that a single key's range cannot express."""
    for name in ("synth", "data"):
        sec = getattr(cfg, name, None)
        if sec is not None and sec.val_frac + sec.test_frac >= 1:
            raise ConfigError(f"{name}.val_frac + {name}.test_frac must be below 1, got {sec.val_frac} + {sec.test_frac}")
    data = getattr(cfg, "data", None)
    if data is not None and data.cache not in CACHE_MODES:
        raise ConfigError(f"data.cache must be one of {', '.join(CACHE_MODES)}, got {data.cache!r}")
    seg = getattr(cfg, "seg", None)
    if seg is not None:
        if len(seg.decoder_channels) != seg.encoder_depth:
            raise ConfigError(f"seg.decoder_channels has {len(seg.decoder_channels)} entries but seg.encoder_depth is {seg.encoder_depth}")
        if seg.image_size % 2**seg.encoder_depth:
            raise ConfigError(f"seg.image_size {seg.image_size} must be divisible by 2**seg.encoder_depth = {2**seg.encoder_depth}")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested mapping; unknown keys and out-of-range values raise ``ConfigError``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; valid: {', '.join(sorted(known))}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    obj = cls(**kwargs)
    _check_limits(obj, prefix)
    if not prefix:
        _check_sections(obj)
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) for YAML/JSON."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


# Keys holding a free-form mapping: ``--set audit.cam_options.n_steps=16`` may add an entry to them.
FREE_MAPPINGS: frozenset[str] = frozenset({"audit.cam_options"})


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
        if parts[-1] not in node and ".".join(parts[:-1]) not in FREE_MAPPINGS:
            raise ConfigError(f"override {key!r}: unknown key {parts[-1]!r}; valid: {', '.join(sorted(node))}")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: the value is not a valid YAML scalar or list") from None
    return from_dict(type(cfg), data)


USER_CONFIG = "lungaudit.yaml"


def packaged_config(name: str = "default.yaml") -> Path:
    """A YAML file shipped inside the package (``default.yaml``, ``gate.yaml``), found without a checkout."""
    return Path(str(resources.files("lungaudit").joinpath("configs", name)))


def find_config(explicit: str | Path | None = None) -> Path:
    """The config file to load: ``explicit`` if given, else ``./lungaudit.yaml``, else the packaged defaults.

    A stray ``configs/default.yaml`` in the working directory is never picked up implicitly.
    """
    if explicit is not None:
        return Path(explicit)
    local = Path(USER_CONFIG)
    return local if local.is_file() else packaged_config()


def read_yaml_mapping(path: Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file holding a mapping; every failure is a ``ConfigError`` naming the file."""
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path} is not valid YAML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{what} {path} cannot be read: {e.strerror or e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a mapping at the top level")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), cls: type[T] = TrainConfig) -> T:  # type: ignore[assignment]
    """Load ``cls`` from YAML (missing keys keep their defaults) and apply ``key=value`` overrides.

    ``path=None`` means :func:`find_config` (``./lungaudit.yaml`` or the packaged defaults). Every
    error is a ``ConfigError`` whose message names the file it came from.
    """
    p = find_config(path)
    try:
        cfg = from_dict(cls, read_yaml_mapping(p))
        return apply_overrides(cfg, overrides) if overrides else cfg
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if str(p) in msg else f"{p}: {msg}") from None


def save_config(cfg: Any, path: str | Path) -> None:
    from lungaudit.utils import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))


__all__ = [
    "CACHE_MODES",
    "CLASS_NAMES",
    "SHORTCUT_KINDS",
    "AuditConfig",
    "ClsConfig",
    "ConfigError",
    "DataConfig",
    "DistConfig",
    "SegConfig",
    "SynthConfig",
    "TrainConfig",
    "LIMITS",
    "USER_CONFIG",
    "apply_overrides",
    "find_config",
    "from_dict",
    "load_config",
    "packaged_config",
    "read_yaml_mapping",
    "replace",
    "save_config",
    "to_dict",
]
