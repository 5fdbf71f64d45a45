"""The planting generator's settings: one frozen dataclass, checked up front."""

from __future__ import annotations

from dataclasses import dataclass

# Each class owns one corner (or edge) per cue kind, so four classes is the most a position can encode.
MAX_CLASSES = 4
KIND_NAMES: tuple[str, ...] = ("text", "ruler", "band", "patch")


@dataclass(frozen=True)
class PlantConfig:
    """How shortcuts are planted on real radiographs.

    ``rate``: P(the cue points at the image's own class) in train and val; in test the cue's class is
    balanced over the classes whatever the label (independent). ``kinds``: the cue kinds drawn from,
    each image carries exactly one. ``margin_frac``: the lung mask is dilated by this fraction of the
    shorter image side and no cue pixel may fall on it.
    """

    rate: float = 0.9
    seed: int = 0
    val_frac: float = 0.15
    test_frac: float = 0.25
    kinds: tuple[str, ...] = KIND_NAMES
    margin_frac: float = 0.02


def validate(cfg: PlantConfig) -> None:
    """Raise ``ValueError`` with a clear message for settings the generator cannot honour."""
    if not 0.0 <= cfg.rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {cfg.rate}")
    if not (0.0 <= cfg.val_frac < 1.0 and 0.0 < cfg.test_frac < 1.0 and cfg.val_frac + cfg.test_frac < 1.0):
        raise ValueError(
            f"val_frac must be >= 0, test_frac > 0 (the twins live in test) and their sum below 1; "
            f"got {cfg.val_frac}, {cfg.test_frac}"
        )
    unknown = [k for k in cfg.kinds if k not in KIND_NAMES]
    if unknown or not cfg.kinds:
        raise ValueError(f"kinds must be a non-empty subset of {', '.join(KIND_NAMES)}; got {', '.join(cfg.kinds) or 'none'}")
    if len(set(cfg.kinds)) != len(cfg.kinds):
        raise ValueError(f"kinds lists a kind twice: {', '.join(cfg.kinds)}")
    if not 0.0 <= cfg.margin_frac <= 0.2:
        raise ValueError(f"margin_frac must be in [0, 0.2], got {cfg.margin_frac}")


__all__ = ["KIND_NAMES", "MAX_CLASSES", "PlantConfig", "validate"]
