"""``folders``: ``ROOT/<class>/*.png|jpg|...``, one class per folder, no masks."""

from __future__ import annotations

from pathlib import Path

from lungaudit.data.layouts.base import Layout, register_layout
from lungaudit.data.layouts.files import candidate_files, has_images, subdirs
from lungaudit.data.records import Problem, Sample


@register_layout
class FoldersLayout(Layout):
    name = "folders"
    priority = 40  # last: almost any folder of folders with images matches
    expected = "<class>/*.png"

    def detect(self, root: Path) -> bool:
        return root.is_dir() and any(has_images(d) for d in subdirs(root))

    def discover(self, root: Path, problems: list[Problem]) -> tuple[list[Sample], tuple[str, ...]]:
        self.require_folder(root)
        samples: list[Sample] = []
        names = []
        for d in subdirs(root, problems):
            files = candidate_files(d, problems)
            if not files:
                continue
            names.append(d.name)
            samples.extend(Sample(path=f, label=d.name) for f in files)
        return samples, tuple(sorted(names))
