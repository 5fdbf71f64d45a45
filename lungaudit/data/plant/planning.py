"""Which split each image goes to, which class its cue points at, and which kind of cue it gets.

Counts are exact rather than drawn, so a small real set still gets the requested correlation:

* **split**: :func:`lungaudit.data.split.assign_splits`, stratified by label and grouped by patient;
* **cue class**: in train and val, ``round(rate * n)`` images of each label get their own class's cue
  and the rest cycle through the other classes; in test every label cycles through all classes, so
  the cue says nothing about the label there;
* **kind**: one weighted wheel of kinds, dealt across the (split, label, cue class) cells in turn, so
  the kind is independent of the label and of whether the cue agrees with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lungaudit.data.plant.config import PlantConfig
from lungaudit.data.plant.inputs import RealImage
from lungaudit.data.plant.kinds import KINDS
from lungaudit.data.records import Sample
from lungaudit.data.split import SPLITS, assign_splits


@dataclass(frozen=True)
class Assignment:
    """One image's plan: its split, the class its cue points at, and the cue kind."""

    image: RealImage
    split: str
    cue_class: int
    kind: str


def _cue_classes(rng: np.random.Generator, own: int, n: int, n_classes: int, rate: float, test: bool) -> list[int]:
    """Cue classes for ``n`` images of class ``own``, in a seeded random order."""
    start = int(rng.integers(n_classes))
    if test:
        cues = [(start + j) % n_classes for j in range(n)]
    else:
        agree = int(round(rate * n))
        others = [c for c in range(n_classes) if c != own]
        cues = [own] * agree + [others[(start + j) % len(others)] for j in range(n - agree)]
    order = rng.permutation(n)
    return [cues[k] for k in order]


def _wheel(rng: np.random.Generator, kinds: tuple[str, ...]) -> list[str]:
    wheel = [k for k in kinds for _ in range(KINDS[k].weight)]
    return [wheel[i] for i in rng.permutation(len(wheel))]


def plan(images: list[RealImage], class_names: tuple[str, ...], cfg: PlantConfig) -> list[Assignment]:
    """The plan for every image of ``images`` (same order); deterministic for ``cfg.seed``."""
    samples = [Sample(path=im.image, label=im.label, patient_id=im.patient_id) for im in images]
    splits = [s.split for s in assign_splits(samples, cfg.val_frac, cfg.test_frac, cfg.seed)]
    rng = np.random.default_rng([cfg.seed, 0x91A7])
    n_classes = len(class_names)
    cue: dict[int, int] = {}
    for split in SPLITS:
        for own, label in enumerate(class_names):
            idx = [i for i, im in enumerate(images) if splits[i] == split and im.label == label]
            for i, c in zip(idx, _cue_classes(rng, own, len(idx), n_classes, cfg.rate, split == "test")):
                cue[i] = c
    wheel, turn = _wheel(rng, cfg.kinds), 0
    kind: dict[int, str] = {}
    for split in SPLITS:
        for label in class_names:
            for c in range(n_classes):
                idx = [i for i, im in enumerate(images) if splits[i] == split and im.label == label and cue[i] == c]
                dealt = [wheel[(turn + j) % len(wheel)] for j in range(len(idx))]
                turn += len(idx)
                for i, k in zip(idx, rng.permutation(len(idx))):
                    kind[i] = dealt[k]
    return [Assignment(im, str(splits[i]), cue[i], kind[i]) for i, im in enumerate(images)]


__all__ = ["Assignment", "plan"]
