"""``plant()``: read real radiographs, plan, burn one cue into each, write the data set atomically.

Output (every path relative, forward slashes, nothing chosen by a label)::

    OUT/manifest.csv        path,mask,label,split,source,patient_id,shortcut,shortcut_box,twin,
                            shortcut_class,shortcut_style,origin
    OUT/images/<stem>.png   8-bit grey, the input's size, one cue burned in
    OUT/masks/<stem>.<ext>  the input's mask file, byte for byte
    OUT/twins/<stem>.png    test images only: the same pixels without the cue
    OUT/plant_config.yaml   the settings, label source and class order
    OUT/problems.csv        every input that could not be used, and why

``shortcut`` is the cue kind (empty when no cue fitted off the lungs), ``shortcut_box`` its changed
pixels' box ``x0 y0 x1 y1`` (half-open), ``shortcut_class`` the class the cue points at. The image and
its twin differ only inside that box.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from lungaudit.config import to_dict
from lungaudit.data.imageio import IMAGE_EXTENSIONS, ImageReadError, read_image, read_mask
from lungaudit.data.layouts import DatasetError, write_problems_csv
from lungaudit.data.plant.canvas import Box, Canvas, burn
from lungaudit.data.plant.config import MAX_CLASSES, PlantConfig, validate
from lungaudit.data.plant.inputs import RealImage, discover
from lungaudit.data.plant.kinds import Placed, make_cue
from lungaudit.data.plant.labels import LabelSpecError, parse_suffix_labels, read_label_table
from lungaudit.data.plant.planning import Assignment, plan
from lungaudit.data.records import Problem
from lungaudit.utils import atomic_write_bytes, atomic_write_png, atomic_write_text

log = logging.getLogger(__name__)

MANIFEST_COLUMNS: tuple[str, ...] = (
    "path", "mask", "label", "split", "source", "patient_id", "shortcut", "shortcut_box", "twin",
    "shortcut_class", "shortcut_style", "origin",
)  # fmt: skip
CONFIG_NAME = "plant_config.yaml"
GENERATOR_VERSION = 1  # bumped whenever the same inputs and settings would give other pixels
OWNED_FOLDERS: tuple[str, ...] = ("images", "masks", "twins")


class PlantError(DatasetError):
    """The input as a whole cannot be planted on (nothing usable, too few classes, bad OUT)."""


@dataclass
class PlantResult:
    """Where the data set went, its manifest rows, and the inputs that were skipped."""

    out: Path
    manifest: Path
    rows: list[dict[str, str]]
    class_names: tuple[str, ...]
    problems: list[Problem] = field(default_factory=list)

    @property
    def unplaced(self) -> int:
        """Images that carry no cue because none fitted off their lungs."""
        return sum(1 for r in self.rows if not r["shortcut"])


def load_pixels(image: RealImage) -> tuple[np.ndarray, np.ndarray]:
    """The radiograph as 8-bit grey ``(H, W)`` and its lung mask as bool; raises ImageReadError.

    8-bit grey inputs come back exactly; 16-bit, colour and DICOM inputs go through lungaudit's one
    intensity convention (:func:`lungaudit.data.imageio.read_image`) and are rounded to 8 bits.
    """
    pixels = np.round(read_image(image.image) * np.float32(255.0)).astype(np.uint8)
    return pixels, read_mask(image.mask, pixels.shape)


def _usable(images: list[RealImage], problems: list[Problem]) -> list[RealImage]:
    """The images whose pixels and mask decode; the others become problems naming the bad file."""
    keep = []
    for im in images:
        try:
            shape = read_image(im.image).shape
        except ImageReadError as e:
            problems.append(Problem(im.image, e.reason, "image"))
            continue
        try:
            read_mask(im.mask, shape)
        except ImageReadError as e:
            problems.append(Problem(im.mask, f"{e.reason} (mask of {im.image.name}; image skipped)", "mask"))
            continue
        keep.append(im)
    return keep


def _prepare_out(out: Path) -> None:
    """Refuse a folder that holds anything but an earlier planted set: it is about to be filled."""
    if out.exists() and not out.is_dir():
        raise PlantError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / CONFIG_NAME).is_file():
        raise PlantError(f"{out}: the folder is not empty and holds no {CONFIG_NAME}; plant into a new or empty folder")
    for sub in OWNED_FOLDERS:
        (out / sub).mkdir(parents=True, exist_ok=True)


def _remove_stale(out: Path, written: set[str]) -> None:
    """Drop files an earlier run left in the folders plant owns, so a rerun equals a fresh run."""
    for sub in OWNED_FOLDERS:
        for p in (out / sub).iterdir():
            if p.is_file() and f"{sub}/{p.name}" not in written:
                p.unlink()


def _image_rng(seed: int, stem: str) -> np.random.Generator:
    """Per-image randomness keyed on the output stem: removing one input leaves the others' cues alone."""
    key = int.from_bytes(hashlib.sha256(stem.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, key])


def _cue(a: Assignment, canvas: Canvas, rng: np.random.Generator, kinds: tuple[str, ...], n: int) -> tuple[str, Placed] | None:
    """The planned kind's cue, else another kind at the same class (only if the planned one cannot fit)."""
    for kind in (a.kind, *[k for k in kinds if k != a.kind]):
        placed = make_cue(kind, rng, canvas, a.cue_class, n)
        if placed is not None:
            return kind, placed
    return None


def _write_one(out: Path, a: Assignment, cfg: PlantConfig, class_names: tuple[str, ...]) -> dict[str, str]:
    """Burn the cue, write image, mask copy and (test) twin; return the manifest row."""
    im = a.image
    pixels, lungs = load_pixels(im)
    canvas = Canvas(pixels, lungs, cfg.margin_frac)
    rng = _image_rng(cfg.seed, im.stem)
    found = _cue(a, canvas, rng, cfg.kinds, len(class_names))
    image, box, kind, style = pixels, None, "", ""
    if found is not None:
        kind, (stamp, y, x) = found
        image, box = burn(canvas, stamp, y, x, rng)
        style = stamp.style
    if box is None:
        image, kind, style = pixels, "", ""
        log.warning("%s: no cue fits off the lungs; written without one", im.image)
    ext = im.mask.suffix.lower() if im.mask.suffix.lower() in IMAGE_EXTENSIONS else ""
    row = {
        "path": f"images/{im.stem}.png", "mask": f"masks/{im.stem}{ext}", "label": im.label, "split": a.split,
        "source": im.source or "", "patient_id": im.patient_id or im.stem, "shortcut": kind,
        "shortcut_box": _box_str(box), "twin": f"twins/{im.stem}.png" if a.split == "test" else "",
        "shortcut_class": class_names[a.cue_class] if kind else "", "shortcut_style": style, "origin": im.origin,
    }  # fmt: skip
    atomic_write_png(out / row["path"], image)
    atomic_write_bytes(out / row["mask"], im.mask.read_bytes())
    if row["twin"]:
        atomic_write_png(out / row["twin"], pixels)
    return row


def _box_str(box: Box | None) -> str:
    return "" if box is None else " ".join(str(v) for v in box)


def _manifest_text(rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _labels_source(labels: Path | None, suffixes: dict[str, str] | None) -> dict[str, object]:
    if labels is not None:
        return {"labels_csv": Path(labels).name}
    if suffixes is not None:
        return {"suffix_labels": dict(suffixes)}
    return {"from": "input"}


def _read_inputs(
    real: Path, labels: Path | None, suffix_labels: str | dict[str, str] | None
) -> tuple[list[RealImage], list[Problem], dict[str, str] | None]:
    """Discover and decode the inputs; raises PlantError/ValueError for an unusable label source."""
    if labels is not None and suffix_labels is not None:
        raise ValueError("give either a labels CSV or suffix labels, not both")
    try:
        suffixes = parse_suffix_labels(suffix_labels) if isinstance(suffix_labels, str) else suffix_labels
        table, problems = read_label_table(Path(labels)) if labels is not None else (None, [])
    except LabelSpecError as e:
        raise PlantError(str(e)) from None
    images, found = discover(Path(real), table, suffixes)
    problems = found + problems
    return _usable(images, problems), problems, suffixes


def _class_names(images: list[RealImage], real: Path, problems: list[Problem]) -> tuple[str, ...]:
    if not images:
        first = f"; first: {problems[0].path}: {problems[0].reason}" if problems else ""
        raise PlantError(f"{real}: no image can be planted on ({len(problems)} problem file(s){first})", problems)
    names = tuple(sorted({im.label for im in images}))
    if not 2 <= len(names) <= MAX_CLASSES:
        raise PlantError(
            f"{real}: planting needs 2 to {MAX_CLASSES} classes (each owns a corner); found {len(names)}: {', '.join(names)}",
            problems,
        )
    return names


def plant(
    real: Path,
    out: Path,
    cfg: PlantConfig | None = None,
    *,
    labels: Path | None = None,
    suffix_labels: str | dict[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PlantResult:
    """Plant label-correlated shortcuts on the real radiographs under ``real``; write the set to ``out``.

    ``labels``: a CSV (``path``/``stem``, ``label``); ``suffix_labels``: ``"0=Normal,1=TB"`` or a dict;
    neither: the input's own labels (manifest or class folders). ``progress(done, total)`` after each
    image. Raises ``ValueError`` for bad settings and :class:`PlantError` (a ``DatasetError`` carrying
    the per-file problems) when nothing can be planted; every skipped file is in ``result.problems``.
    """
    cfg = cfg or PlantConfig()
    validate(cfg)
    images, problems, suffixes = _read_inputs(Path(real), labels, suffix_labels)
    class_names = _class_names(images, Path(real), problems)
    out = Path(out)
    _prepare_out(out)
    rows = []
    for i, a in enumerate(plan(images, class_names, cfg)):
        rows.append(_write_one(out, a, cfg, class_names))
        if progress is not None:
            progress(i + 1, len(images))
    _remove_stale(out, {r[k] for r in rows for k in ("path", "mask", "twin") if r[k]})
    manifest = out / "manifest.csv"
    atomic_write_text(manifest, _manifest_text(rows))
    write_problems_csv(problems, out / "problems.csv")
    record = {"generator_version": GENERATOR_VERSION, "plant": to_dict(cfg), "class_names": list(class_names)}
    atomic_write_text(out / CONFIG_NAME, yaml.safe_dump(record | _labels_source(labels, suffixes), sort_keys=False))
    log.info("planted %d image(s) into %s (%d problem file(s))", len(rows), out, len(problems))
    return PlantResult(out, manifest, rows, class_names, problems)


__all__ = ["CONFIG_NAME", "MANIFEST_COLUMNS", "PlantError", "PlantResult", "load_pixels", "plant"]
