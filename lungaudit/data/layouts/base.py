"""What a layout is, the registry of layouts, and detection.

A layout is a small class with ``detect(root)`` and ``discover(root, problems)``, registered with
:func:`register_layout`. ``detect_layout`` tries the registered layouts in ``priority`` order, and
everything else (the valid ``--layout`` names, the error messages, the tests) reads the registry, so
a new layout needs no edits elsewhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from lungaudit.data.records import Problem, Sample
from lungaudit.registry import Registry

AUTO = "auto"  # not a layout: "detect it"


class DatasetError(ValueError):
    """The data set as a whole cannot be used (missing, empty, unreadable, unknown layout).

    ``problems`` carries the per-file problems found before giving up, so callers can still report them.
    """

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


class Layout(ABC):
    """One on-disk layout: how to recognise it and how to list its samples.

    ``priority``: detection tries lower values first, so a layout whose signature is more specific
    (a manifest file) wins over one that matches almost any folder (class-per-folder).
    ``expected``: what the layout looks like, for the message when nothing matches.
    """

    name: ClassVar[str]
    priority: ClassVar[int]
    expected: ClassVar[str]

    @abstractmethod
    def detect(self, root: Path) -> bool:
        """Whether ``root`` (an existing file or folder) is in this layout; False for the wrong kind
        of path. May raise :class:`DatasetError` for a folder that cannot be listed."""

    @abstractmethod
    def discover(self, root: Path, problems: list[Problem]) -> tuple[list[Sample], tuple[str, ...]]:
        """``(samples, class_names)`` found under ``root``; unusable files are appended to ``problems``.

        Raises :class:`DatasetError` when ``root`` cannot hold this layout at all.
        """

    def data_root(self, root: Path) -> Path:
        """The folder that ``Dataset.root`` names (sample paths are resolved against it)."""
        return root

    def require_folder(self, root: Path) -> None:
        if not root.is_dir():
            raise DatasetError(f"{root}: layout {self.name!r} needs a folder")


LAYOUT_TYPES: Registry[type[Layout]] = Registry("layout")


def register_layout(cls: type[Layout]) -> type[Layout]:
    """Class decorator: register a :class:`Layout` under its ``name``."""
    return LAYOUT_TYPES.register(cls.name)(cls)


def layout_names() -> tuple[str, ...]:
    """Valid ``layout`` arguments: ``"auto"`` then every registered layout, sorted."""
    return (AUTO, *LAYOUT_TYPES.names())


def get_layout(name: str) -> Layout:
    """The registered layout ``name``; :class:`DatasetError` listing the valid names otherwise."""
    if name not in LAYOUT_TYPES:
        raise DatasetError(f"unknown layout {name!r}; valid: {', '.join(layout_names())}")
    return LAYOUT_TYPES.get(name)()


def detection_order() -> list[Layout]:
    """Every registered layout, in the order ``detect_layout`` tries them."""
    return [cls() for _, cls in sorted(LAYOUT_TYPES.items(), key=lambda item: (item[1].priority, item[0]))]


def detect_layout(root: Path) -> str:
    """Which layout the existing file or folder ``root`` is in; raises :class:`DatasetError` when
    none matches."""
    layouts = detection_order()
    for layout in layouts:
        if layout.detect(root):
            return layout.name
    if root.is_file():
        raise DatasetError(f"{root}: a file was given, but only a .csv manifest can be read as a data set")
    *most, last = [layout.expected for layout in layouts]
    expected = f"{', '.join(most)} or {last}" if most else last
    raise DatasetError(f"{root}: no images found in a known layout (expected {expected})")
