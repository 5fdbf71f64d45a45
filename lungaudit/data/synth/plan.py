"""Planning: decide every image's label, patient, split, source and shortcut values before any pixel
is drawn, so rendering is a pure function of one :class:`CaseParams` and runs in any worker.

The split is the project's own (:func:`lungaudit.data.split.assign_splits`: patient-grouped,
class-stratified), applied to lightweight records of the planned images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lungaudit.config import CLASS_NAMES, SHORTCUT_KINDS, SynthConfig
from lungaudit.data.split import assign_splits
from lungaudit.data.synth.shortcuts import MARKER_VOCABS

PAIR_FRACTION = 0.1  # fraction of patients that contribute two images


@dataclass(frozen=True)
class CaseParams:
    """Everything needed to render and write one image; plain data so it pickles cheaply.

    ``marker_class`` / ``shoulder_class`` name the class whose cue is planted (None: cue disabled).
    ``anatomy_key`` seeds anatomy and disease, shared by the images of one patient; ``noise_key``
    seeds the per-image noise and marker token.
    """

    label: str
    file_index: int  # 1-based within the class, as in the real data base
    split: str
    source: int
    patient_id: str
    size: int
    anatomy_key: tuple[int, ...]
    noise_key: tuple[int, ...]
    marker_class: int | None = None
    shoulder_class: int | None = None
    source_cue: bool = False
    make_twin: bool = False
    severity_min: float = SynthConfig.severity_min
    marker_vocab: str = SynthConfig.marker_vocab
    marker_plate: bool = SynthConfig.marker_plate

    @property
    def class_index(self) -> int:
        return CLASS_NAMES.index(self.label)

    @property
    def stem(self) -> str:
        return f"{self.label}-{self.file_index}"


@dataclass(frozen=True)
class _Planned:
    """One image before its split is known: what :func:`assign_splits` needs, plus its patient's
    first file index (which seeds the anatomy the patient's images share)."""

    label: str
    file_index: int
    first: int
    patient_id: str
    split: str | None = None


def validate(cfg: SynthConfig) -> None:
    """Raise ``ValueError`` with a clear message for a config the generator cannot honour."""
    unknown = [k for k in cfg.shortcuts if k not in SHORTCUT_KINDS]
    if unknown:
        raise ValueError(f"unknown shortcut kind(s) {', '.join(unknown)}; valid: {', '.join(SHORTCUT_KINDS)}")
    if not 0.0 <= cfg.shortcut_rate <= 1.0:
        raise ValueError(f"shortcut_rate must be in [0, 1], got {cfg.shortcut_rate}")
    if cfg.n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {cfg.n_per_class}")
    if cfg.size < 32:
        raise ValueError(f"size must be at least 32 px, got {cfg.size}")
    if not (0 <= cfg.val_frac and 0 <= cfg.test_frac and cfg.val_frac + cfg.test_frac < 1):
        raise ValueError(f"val_frac and test_frac must be >= 0 and sum below 1, got {cfg.val_frac}, {cfg.test_frac}")
    if not 1 <= cfg.n_sources <= 26:
        raise ValueError(f"n_sources must be in 1..26, got {cfg.n_sources}")
    if cfg.workers < 0:
        raise ValueError(f"workers must be >= 0, got {cfg.workers}")
    if not 0.0 <= cfg.severity_min <= 1.0:
        raise ValueError(f"severity_min must be in [0, 1], got {cfg.severity_min}")
    if cfg.marker_vocab not in MARKER_VOCABS:
        raise ValueError(f"marker_vocab must be one of {', '.join(MARKER_VOCABS)}, got {cfg.marker_vocab!r}")


def _patients(rng: np.random.Generator, label: str, n: int) -> list[_Planned]:
    """``label``'s ``n`` images in file order; about ``PAIR_FRACTION`` of its patients have two
    (same anatomy, new noise), the others one."""
    n_pairs = int(round(n * PAIR_FRACTION / (1 + PAIR_FRACTION)))
    order = (rng.permutation(n) + 1).tolist()
    first_of = {i: i for i in order[2 * n_pairs :]}
    for k in range(n_pairs):
        pair = sorted(order[2 * k : 2 * k + 2])
        first_of.update(dict.fromkeys(pair, pair[0]))
    tag = label.replace(" ", "_")
    return [_Planned(label, i, first_of[i], f"synth-{tag}-{first_of[i]}") for i in range(1, n + 1)]


def _correlated(rng: np.random.Generator, own: int, n: int, rate: float, split: str) -> int:
    """``own`` with probability ``rate`` in train/val (else a uniform other value); uniform in test."""
    if split == "test" or n == 1:
        return int(rng.integers(n))
    if rng.random() < rate:
        return own
    other = int(rng.integers(n - 1))
    return other if other < own else other + 1


def _case(rng: np.random.Generator, cfg: SynthConfig, p: _Planned) -> CaseParams:
    """Draw ``p``'s source and shortcut values for its split and pack everything for rendering."""
    c, n, sp = CLASS_NAMES.index(p.label), cfg.n_per_class, str(p.split)
    if "source" in cfg.shortcuts:
        src = _correlated(rng, c % cfg.n_sources, cfg.n_sources, cfg.shortcut_rate, sp)
    else:
        src = int(rng.integers(cfg.n_sources))
    marker = _correlated(rng, c, 4, cfg.shortcut_rate, sp) if "markers" in cfg.shortcuts else None
    shoulder = _correlated(rng, c, 4, cfg.shortcut_rate, sp) if "shoulders" in cfg.shortcuts else None
    return CaseParams(
        label=p.label,
        file_index=p.file_index,
        split=sp,
        source=src,
        patient_id=p.patient_id,
        size=cfg.size,
        anatomy_key=(cfg.seed, c * n + (p.first - 1), 1),
        noise_key=(cfg.seed, c * n + (p.file_index - 1)),
        marker_class=marker,
        shoulder_class=shoulder,
        source_cue="source" in cfg.shortcuts,
        make_twin=sp == "test",
        severity_min=cfg.severity_min,
        marker_vocab=cfg.marker_vocab,
        marker_plate=cfg.marker_plate,
    )


def plan_cases(cfg: SynthConfig) -> list[CaseParams]:
    """Every image's parameters, class by class in file order (deterministic per config).

    Raises ``ValueError`` for an invalid config (see :func:`validate`).
    """
    validate(cfg)
    rng = np.random.default_rng([cfg.seed, 0x5EED])
    planned = [p for label in CLASS_NAMES for p in _patients(rng, label, cfg.n_per_class)]
    planned = assign_splits(planned, cfg.val_frac, cfg.test_frac, seed=cfg.seed)
    return [_case(rng, cfg, p) for p in planned]
