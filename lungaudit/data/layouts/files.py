"""Folder listing shared by the folder-based layouts: image candidates and image -> mask matching."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from lungaudit.data.imageio import IMAGE_EXTENSIONS
from lungaudit.data.layouts.base import DatasetError
from lungaudit.data.records import Problem

_IGNORED_FILES = frozenset({"thumbs.db", "desktop.ini"})


def list_dir(folder: Path) -> list[Path]:
    """``folder``'s entries sorted by name; :class:`DatasetError` naming the folder if it cannot be listed."""
    try:
        return sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as e:
        raise DatasetError(f"{folder}: cannot list folder ({e.strerror or e})") from None


def link_problem(path: Path) -> str | None:
    """Why ``path``, a symbolic link, cannot be followed (a loop, a missing target); None otherwise.

    ``Path.is_file()`` is simply False for both, so without this a looping or dangling link would be
    skipped without a word. Only the link's own metadata is read, never the content it points to.
    """
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symbolic link loop (skipped)"
        return f"broken symbolic link: its target cannot be reached ({e.strerror or e}; skipped)"
    return None


def candidate_files(folder: Path, problems: list[Problem]) -> list[Path]:
    """Image files in ``folder`` (not recursive). Hidden/OS junk files are skipped silently; files with
    a non-image extension, looping or dangling symbolic links are reported; files without an
    extension are kept (they may be DICOM)."""
    out = []
    for p in list_dir(folder):
        if p.name.startswith(".") or p.name.lower() in _IGNORED_FILES:
            continue
        if not p.is_file():
            reason = link_problem(p)
            if reason is not None:
                problems.append(Problem(p, reason, "image"))
            continue
        ext = p.suffix.lower()
        if ext in IMAGE_EXTENSIONS or ext == "":
            out.append(p)
        else:
            problems.append(Problem(p, f"unrecognised file type '{ext}' (skipped)", "image"))
    return out


def has_images(folder: Path) -> bool:
    """Whether ``folder`` directly holds a file with an image extension (unreadable folder: False)."""
    try:
        return any(
            p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
            for p in folder.iterdir()
        )
    except OSError:
        return False


def subdirs(root: Path, problems: list[Problem] | None = None) -> list[Path]:
    """Non-hidden sub-folders of ``root``, sorted by name; looping or dangling links go to ``problems``."""
    out = []
    for p in list_dir(root):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            out.append(p)
        elif problems is not None and (reason := link_problem(p)) is not None:
            problems.append(Problem(p, reason, "class"))
    return out


def mask_index(mask_dir: Path) -> dict[str, Path]:
    """Mask lookup by lower-cased file name, and by stem (also with a ``_mask`` suffix stripped)."""
    index: dict[str, Path] = {}
    if not mask_dir.is_dir():
        return index
    for p in list_dir(mask_dir):
        if not p.is_file() or p.name.startswith("."):
            continue
        name = p.name.lower()
        stem = p.stem.lower()
        index.setdefault(name, p)
        index.setdefault("stem:" + stem, p)
        if stem.endswith("_mask"):
            index.setdefault("stem:" + stem[: -len("_mask")], p)
    return index


def find_mask(index: dict[str, Path], image: Path) -> Path | None:
    """The mask for ``image`` from :func:`mask_index`: same file name first, then same stem."""
    return index.get(image.name.lower()) or index.get("stem:" + image.stem.lower())


def images_with_masks(image_dir: Path, mask_dir: Path, problems: list[Problem]) -> list[tuple[Path, Path | None]]:
    """Each image in ``image_dir`` with its mask from ``mask_dir`` (None, reported, when missing)."""
    masks = mask_index(mask_dir)
    out = []
    for img in candidate_files(image_dir, problems):
        mask = find_mask(masks, img)
        if mask is None:
            problems.append(Problem(img, f"missing mask (expected masks/{img.name})", "mask"))
        out.append((img, mask))
    return out
