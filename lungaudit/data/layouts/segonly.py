"""``segonly``: ``ROOT/images/*`` (+ ``ROOT/masks/*``) with no labels, for segmentation training."""

from __future__ import annotations

from pathlib import Path

from lungaudit.data.layouts.base import DatasetError, Layout, register_layout
from lungaudit.data.layouts.files import images_with_masks
from lungaudit.data.records import Problem, Sample


@register_layout
class SegOnlyLayout(Layout):
    name = "segonly"
    priority = 30
    expected = "images/ + masks/"

    def detect(self, root: Path) -> bool:
        return (root / "images").is_dir()

    def discover(self, root: Path, problems: list[Problem]) -> tuple[list[Sample], tuple[str, ...]]:
        self.require_folder(root)
        if not (root / "images").is_dir():
            raise DatasetError(f"{root}: layout 'segonly' needs an images/ folder")
        pairs = images_with_masks(root / "images", root / "masks", problems)
        return [Sample(path=img, label=None, mask_path=mask) for img, mask in pairs], ()
