"""Planted shortcuts on real anatomy: the phantoms' twin-based ground truth, on real radiographs.

``plant(REAL_DIR, OUT)`` takes real chest X-rays with lung masks and a label per image, burns one
shortcut cue into each (laterality letters, "PORTABLE", "AP SUPINE", hospital-like tokens in several
fonts, sizes and contrasts, bare or on a plate; rulers; collimation bands; corner patches), always
off the dilated lung mask, and writes a manifest data set lungaudit reads:

* the cue's position (and, for text, its words) points at a class: at ``rate`` the image's own in
  train and val, independent of the label in test;
* every test image has a clean twin, identical outside the cue's box;
* masks are copied byte for byte, images keep their size, output is byte-identical per seed.

Modules: ``config`` (settings), ``labels`` and ``inputs`` (what to read), ``glyphs``, ``canvas`` and
``kinds`` (how a cue looks and where it fits), ``planning`` (splits, cue classes, kinds), ``writer``.
"""

from lungaudit.data.plant.config import KIND_NAMES, MAX_CLASSES, PlantConfig, validate
from lungaudit.data.plant.kinds import KINDS, TOKENS
from lungaudit.data.plant.labels import LabelSpecError, parse_suffix_labels
from lungaudit.data.plant.writer import CONFIG_NAME, MANIFEST_COLUMNS, PlantError, PlantResult, load_pixels, plant

__all__ = [
    "CONFIG_NAME",
    "KINDS",
    "KIND_NAMES",
    "MANIFEST_COLUMNS",
    "MAX_CLASSES",
    "TOKENS",
    "LabelSpecError",
    "PlantConfig",
    "PlantError",
    "PlantResult",
    "load_pixels",
    "parse_suffix_labels",
    "plant",
    "validate",
]
