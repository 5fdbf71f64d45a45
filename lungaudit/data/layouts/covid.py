"""``covid``: the COVID-19 Radiography Database - ``ROOT/<CLASS>/images/*``, ``ROOT/<CLASS>/masks/*``
and optional ``ROOT/<CLASS>.metadata.xlsx`` (source URL per image)."""

from __future__ import annotations

from pathlib import Path

from lungaudit.config import CLASS_NAMES
from lungaudit.data.layouts.base import Layout, register_layout
from lungaudit.data.layouts.files import images_with_masks, subdirs
from lungaudit.data.layouts.metadata import read_metadata
from lungaudit.data.records import Problem, Sample

_NOT_CLASSES = ("images", "masks")  # a segonly set's folders, not class folders


@register_layout
class CovidLayout(Layout):
    name = "covid"
    priority = 20
    expected = "<CLASS>/images/*.png"

    def detect(self, root: Path) -> bool:
        return root.is_dir() and any((d / "images").is_dir() for d in subdirs(root) if d.name not in _NOT_CLASSES)

    def discover(self, root: Path, problems: list[Problem]) -> tuple[list[Sample], tuple[str, ...]]:
        self.require_folder(root)
        samples: list[Sample] = []
        known = {c.lower(): c for c in CLASS_NAMES}
        for d in subdirs(root, problems):
            if d.name in _NOT_CLASSES or not (d / "images").is_dir():
                continue  # e.g. the synthetic set's twins/ folder
            label = known.get(d.name.lower())
            if label is None:
                valid = ", ".join(repr(c) for c in CLASS_NAMES)
                reason = f"unknown class folder '{d.name}' (expected one of {valid}); its images are skipped"
                problems.append(Problem(d, reason, "class"))
                continue
            xlsx = root / f"{d.name}.metadata.xlsx"
            sources = read_metadata(xlsx, problems) if xlsx.is_file() else {}
            for img, mask in images_with_masks(d / "images", d / "masks", problems):
                samples.append(Sample(path=img, label=label, mask_path=mask, source=sources.get(img.stem.lower())))
        return samples, CLASS_NAMES
