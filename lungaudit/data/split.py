"""Train/val/test splits (stratified by label, grouped by patient) and inverse-frequency class weights.

The split is a deterministic greedy assignment rather than ``StratifiedGroupKFold``: it hits arbitrary
fractions (not just 1/k), never needs a minimum number of groups per class, and handles unlabeled
samples and patients with images of several labels with the same code.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol, TypeVar

import numpy as np

from lungaudit.data.records import Sample

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")


class Splittable(Protocol):
    """What the split reads of a record: a frozen dataclass with these fields (``split`` is replaced)."""

    @property
    def label(self) -> str | None: ...

    @property
    def patient_id(self) -> str | None: ...

    @property
    def split(self) -> str | None: ...


R = TypeVar("R", bound=Splittable)


def assign_splits(samples: Sequence[R], val_frac: float, test_frac: float, seed: int) -> list[R]:
    """Return ``samples`` (same order) with ``split`` set for every sample that has none.

    * A sample is any dataclass with ``label``, ``patient_id`` and ``split`` fields: a loaded
      :class:`Sample`, or a planning record for an image that does not exist yet (the synthetic
      generator splits its planned cases this way before rendering them).
    * Samples that already carry a split keep it; only the others are assigned.
    * Samples sharing a ``patient_id`` form one group that never spans two splits; samples without a
      patient id are their own group.
    * Stratified by label (None counts as one label): groups are visited in a seeded random order,
      largest first, and each goes to the split whose per-label quota would be least filled after
      adding it. Per-class proportions therefore match the fractions up to rounding.
    * Reproducible for a given ``seed``; a different seed gives a different assignment.
    """
    if not (0.0 <= val_frac < 1.0 and 0.0 <= test_frac < 1.0 and val_frac + test_frac < 1.0):
        raise ValueError(f"val_frac and test_frac must be in [0, 1) with a sum below 1; got {val_frac}, {test_frac}")
    out = list(samples)
    todo = [i for i, s in enumerate(out) if s.split is None]
    if not todo:
        return out
    fracs = np.array([1.0 - val_frac - test_frac, val_frac, test_frac])

    groups: dict[str, list[int]] = defaultdict(list)
    for i in todo:
        s = out[i]
        key = f"patient:{s.patient_id}" if s.patient_id not in (None, "") else f"sample:{i}"
        groups[key].append(i)
    labels = sorted({str(out[i].label) for i in todo})
    lab_idx = {lab: k for k, lab in enumerate(labels)}
    n_per_label = np.zeros(len(labels))
    for i in todo:
        n_per_label[lab_idx[str(out[i].label)]] += 1
    target = fracs[:, None] * n_per_label[None, :]  # (split, label)
    count = np.zeros_like(target)

    rng = np.random.default_rng(seed)
    keys = sorted(groups)  # dict order must not leak into the result
    order = [keys[j] for j in rng.permutation(len(keys))]
    order.sort(key=lambda k: -len(groups[k]))  # stable: big groups first, random within a size

    for key in order:
        comp = np.zeros(len(labels))
        for i in groups[key]:
            comp[lab_idx[str(out[i].label)]] += 1
        with np.errstate(divide="ignore", invalid="ignore"):
            fill = (count + comp[None, :]) / target  # fill ratio after adding, per split and label
        fill = np.where(comp[None, :] > 0, fill, 0.0)
        fill = np.where(np.isnan(fill), np.inf, fill)
        cost = (fill * comp[None, :]).sum(axis=1) / comp.sum()
        cost[fracs <= 0] = np.inf
        s_idx = int(np.argmin(cost))  # ties go to the earlier split (train), deterministically
        count[s_idx] += comp
        for i in groups[key]:
            out[i] = replace(out[i], split=SPLITS[s_idx])
    return out


def class_weights(samples: Sequence[Sample], class_names: Sequence[str]) -> np.ndarray:
    """Inverse-frequency weights ``(len(class_names),)`` float32 from the training split, mean 1.

    Counted over samples whose split is ``"train"``; when no sample carries a split at all, over all of
    them. A class absent from training gets weight 0 with a logged warning rather than an error: a
    data set may legitimately use a subset of the canonical class list, and a class the model never
    sees as a target contributes nothing to the loss anyway. The mean over present classes is 1.
    Labels outside ``class_names`` are ignored with a warning. Raises ``ValueError`` when no training
    sample has a known label.
    """
    names = list(class_names)
    if any(s.split is not None for s in samples):
        pool = [s for s in samples if s.split == "train"]
    else:
        pool = list(samples)
    counts = np.zeros(len(names), dtype=np.float64)
    index = {n: i for i, n in enumerate(names)}
    unknown: set[str] = set()
    for s in pool:
        if s.label is None:
            continue
        if s.label in index:
            counts[index[s.label]] += 1
        else:
            unknown.add(s.label)
    if unknown:
        log.warning("class_weights: ignoring labels not in class_names: %s", ", ".join(sorted(unknown)))
    present = counts > 0
    if not present.any():
        raise ValueError("class_weights: no training sample carries a label from class_names")
    missing = [n for n, p in zip(names, present) if not p]
    if missing:
        log.warning("class_weights: class(es) absent from the training split get weight 0: %s", ", ".join(missing))
    w = np.zeros(len(names), dtype=np.float64)
    w[present] = 1.0 / counts[present]
    w[present] /= w[present].mean()
    return w.astype(np.float32)


__all__ = ["SPLITS", "assign_splits", "class_weights"]
