"""Synthetic chest X-ray phantoms with exact lung masks, planted shortcuts and clean twins.

The generator is the project's default data set and the ground truth for the auditor:

* **Anatomy** (body, shoulders, clavicles, ribs, spine, heart, diaphragm domes, two lung fields) varies
  per patient; the lung mask is exactly the drawn lung fields.
* **Class signal lives only inside the lung mask** and has random severity in
  ``[severity_min, 1]``; by default some cases are nearly invisible, so the lungs alone do not
  separate the classes perfectly (as on real films) and a shortcut pays off for every class.
  Normal: clear lungs; COVID: bilateral peripheral lower-zone ground glass; Lung_Opacity: one focal
  dense consolidation; Viral Pneumonia: perihilar interstitial streaks.
* **Shortcuts live only outside the lung mask** and are class-correlated at ``shortcut_rate`` in train
  and val, independent of the class in test:

  - ``markers``: a burned-in text stamp in a corner; class ``k`` owns corner ``k`` (TL, TR, BL, BR in
    ``CLASS_NAMES`` order). Every image carries one stamp. With ``marker_vocab="corner"`` each corner
    has its own words (as each hospital stamps its own), so the words and the corner are the cue;
    with ``"shared"`` any word goes anywhere and only the corner is. ``marker_plate`` burns the
    stamp onto a dark box, which keeps it legible on the bright abdomen in the bottom corners.
  - ``shoulders``: a brightness offset on the shoulders above the lungs, one level per class.
  - ``source``: the acquisition source (exposure, noise, border style) prefers one source per class.

* **Clean twins**: each test image is rendered once without the spatial shortcuts (the twin) and the
  cues are pasted into a copy, so image and twin differ only inside the shortcut boxes.

The package follows the generator's steps: :mod:`.plan` (every image's label, patient, split and
shortcut values), then per image :mod:`.anatomy` -> :mod:`.disease` -> :mod:`.acquire` ->
:mod:`.shortcuts`, orchestrated by :mod:`.render`; :mod:`.write` runs the workers and writes the files.

Output follows the COVID-19 Radiography Database layout (``<CLASS>/images``, ``<CLASS>/masks``,
``<CLASS>.metadata.xlsx``) plus ``twins/<CLASS>/``, ``manifest.csv`` and ``synth_config.yaml``.
Files are byte-identical for a given config, whatever the worker count.

Manifest conventions: paths are relative to the output folder with forward slashes. ``shortcut`` is
the ``;``-joined list of shortcut kinds planted in the image (a kind is planted in every image when
enabled; its *value* - corner, level, source - carries the class). ``shortcut_box`` holds one box per
spatial kind, ``;``-joined in the order ``markers;shoulders``, each ``x0 y0 x1 y1`` in pixels,
half-open (``image[y0:y1, x0:x1]``); with the default ``("markers",)`` it is the single marker box.
"""

from lungaudit.data.synth.acquire import URL_ROOT, source_name, source_url
from lungaudit.data.synth.plan import PAIR_FRACTION, CaseParams, plan_cases, validate
from lungaudit.data.synth.render import render_case
from lungaudit.data.synth.shortcuts import (
    CORNER_NAMES,
    CORNER_TOKENS,
    MARKER_TOKENS,
    MARKER_VOCABS,
    PLATE_LEVEL,
    SHOULDER_LEVELS,
    pick_token,
)
from lungaudit.data.synth.write import MANIFEST_COLUMNS, generate

# Bumped whenever the same config would render different pixels or splits, so caches keyed on it go
# stale. 3: splits come from lungaudit.data.split.assign_splits.
GENERATOR_VERSION = 3

__all__ = [
    "CORNER_NAMES",
    "CORNER_TOKENS",
    "GENERATOR_VERSION",
    "MANIFEST_COLUMNS",
    "MARKER_TOKENS",
    "MARKER_VOCABS",
    "PAIR_FRACTION",
    "PLATE_LEVEL",
    "SHOULDER_LEVELS",
    "URL_ROOT",
    "CaseParams",
    "generate",
    "pick_token",
    "plan_cases",
    "render_case",
    "source_name",
    "source_url",
    "validate",
]
