"""The one record type every loader returns, whatever the on-disk layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One image and what is known about it.

    ``label`` is None for unlabeled data (e.g. a segmentation-only set); ``mask_path`` is None when
    no lung mask was given; ``split`` is one of "train", "val", "test" or None until assigned.
    ``extra`` carries layout-specific columns (synthetic shortcut kind/box, twin path, ...).
    """

    path: Path
    label: str | None = None
    mask_path: Path | None = None
    source: str | None = None
    patient_id: str | None = None
    split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        """Stable identifier used in audit rows and review decisions."""
        return str(self.path)


@dataclass(frozen=True)
class Problem:
    """A file that could not be used, and why. Reported, counted, never raised."""

    path: Path
    reason: str
    kind: str = "image"  # image | mask | class | manifest | metadata


@dataclass
class Dataset:
    """Samples plus the problems found while reading them."""

    root: Path
    layout: str  # covid | folders | manifest | segonly
    samples: list[Sample]
    problems: list[Problem]
    class_names: tuple[str, ...]

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    @property
    def labeled(self) -> bool:
        return any(s.label is not None for s in self.samples)
