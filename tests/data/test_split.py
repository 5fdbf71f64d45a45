from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lungaudit.data.records import Sample
from lungaudit.data.split import assign_splits, class_weights


def _samples(counts: dict[str | None, int], patients: bool = False, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    k = 0
    for label, n in counts.items():
        i = 0
        while i < n:
            size = int(rng.integers(1, 5)) if patients else 1  # 1-4 images per patient
            pid = f"{label}-p{k}" if patients else None
            for _ in range(min(size, n - i)):
                out.append(Sample(Path(f"/x/{label}/{i}.png"), label, patient_id=pid))
                i += 1
            k += 1
    return out


def _fractions(samples: list[Sample]) -> dict[str | None, dict[str, float]]:
    by = defaultdict(Counter)
    for s in samples:
        by[s.label][s.split] += 1
    return {lab: {sp: c[sp] / sum(c.values()) for sp in ("train", "val", "test")} for lab, c in by.items()}


def test_stratified_fractions() -> None:
    samples = _samples({"COVID": 100, "Normal": 60, "Viral Pneumonia": 40})
    out = assign_splits(samples, 0.15, 0.25, seed=0)
    assert [s.path for s in out] == [s.path for s in samples]  # order kept
    for lab, fr in _fractions(out).items():
        assert fr["train"] == pytest.approx(0.60, abs=0.03), lab
        assert fr["val"] == pytest.approx(0.15, abs=0.03), lab
        assert fr["test"] == pytest.approx(0.25, abs=0.03), lab


def test_reproducible_and_seed_dependent() -> None:
    samples = _samples({"A": 50, "B": 50})
    a = [s.split for s in assign_splits(samples, 0.2, 0.2, seed=1)]
    b = [s.split for s in assign_splits(samples, 0.2, 0.2, seed=1)]
    c = [s.split for s in assign_splits(samples, 0.2, 0.2, seed=2)]
    assert a == b
    assert a != c
    assert Counter(a) == Counter(c)  # same quotas, different members


def test_grouped_split_never_leaks_patients() -> None:
    samples = _samples({"COVID": 120, "Normal": 120, "Lung_Opacity": 80}, patients=True)
    out = assign_splits(samples, 0.15, 0.15, seed=0)
    where = defaultdict(set)
    for s in out:
        where[s.patient_id].add(s.split)
    assert all(len(v) == 1 for v in where.values())
    assert any(Counter(s.patient_id for s in samples)[p] > 1 for p in where)  # groups really exist
    for lab, fr in _fractions(out).items():
        assert fr["train"] == pytest.approx(0.70, abs=0.06), lab
        assert fr["val"] == pytest.approx(0.15, abs=0.06), lab


def test_patient_with_several_labels_stays_together() -> None:
    samples = [Sample(Path(f"/x/{i}.png"), "AB"[i % 2], patient_id=f"p{i // 4}") for i in range(80)]
    out = assign_splits(samples, 0.2, 0.2, seed=5)
    for pid in {s.patient_id for s in out}:
        assert len({s.split for s in out if s.patient_id == pid}) == 1


def test_unlabeled_split() -> None:
    out = assign_splits(_samples({None: 100}), 0.1, 0.2, seed=0)
    c = Counter(s.split for s in out)
    assert c == {"train": 70, "val": 10, "test": 20}


def test_existing_splits_kept_and_zero_fraction() -> None:
    samples = _samples({"A": 20})
    samples[0] = Sample(samples[0].path, "A", split="test")
    out = assign_splits(samples, 0.0, 0.2, seed=0)
    assert out[0].split == "test"
    assert "val" not in {s.split for s in out}
    with pytest.raises(ValueError, match="val_frac"):
        assign_splits(samples, 0.6, 0.5, seed=0)


@dataclass(frozen=True)
class _Planned:
    """A record for an image that does not exist yet: no path, only what the split reads."""

    label: str | None
    patient_id: str | None
    split: str | None = None


def test_records_without_paths_split_like_samples() -> None:
    samples = _samples({"COVID": 40, "Normal": 30}, patients=True)
    planned = [_Planned(s.label, s.patient_id) for s in samples]
    out = assign_splits(planned, 0.15, 0.25, seed=4)
    assert all(isinstance(r, _Planned) for r in out)
    assert [r.split for r in out] == [s.split for s in assign_splits(samples, 0.15, 0.25, seed=4)]


def test_class_weights_hand_computed(caplog: pytest.LogCaptureFixture) -> None:
    names = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
    samples = []
    for name, n in zip(names, (10, 20, 40, 30)):
        samples += [Sample(Path(f"/{name}{i}"), name, split="train") for i in range(n)]
    samples += [Sample(Path(f"/v{i}"), "COVID", split="val") for i in range(500)]  # ignored: not train
    w = class_weights(samples, names)
    inv = np.array([1 / 10, 1 / 20, 1 / 40, 1 / 30])
    np.testing.assert_allclose(w, inv / inv.mean(), rtol=1e-6)
    np.testing.assert_allclose(w, [1.92, 0.96, 0.48, 0.64], rtol=1e-6)
    assert w.dtype == np.float32 and w.mean() == pytest.approx(1.0)

    with caplog.at_level(logging.WARNING):
        w2 = class_weights([s for s in samples if s.label != "Normal"], names)
    assert w2[2] == 0.0 and "Normal" in caplog.text
    inv3 = np.array([1 / 10, 1 / 20, 1 / 30])
    np.testing.assert_allclose(w2[[0, 1, 3]], inv3 / inv3.mean(), rtol=1e-6)

    with pytest.raises(ValueError, match="no training sample"):
        class_weights([Sample(Path("/a"), None, split="train")], names)
