"""Discover samples in every supported on-disk layout and turn them into one :class:`Dataset`.

Each layout is a registered :class:`Layout` (``detect`` + ``discover``) in its own module;
``layout="auto"`` picks the first that matches, in priority order:

* ``manifest``  - ``root`` is a ``.csv`` file, or ``root/manifest.csv`` exists. Columns
  ``path,label[,mask][,source][,patient_id][,split]``; any other column goes to ``Sample.extra``.
  Relative paths resolve against the CSV's folder.
* ``covid``     - the COVID-19 Radiography Database: ``ROOT/<CLASS>/images/*``, ``ROOT/<CLASS>/masks/*``
  and optional ``ROOT/<CLASS>.metadata.xlsx`` (source URL per image).
* ``segonly``   - ``ROOT/images/*`` (+ ``ROOT/masks/*``) with no labels, for segmentation training.
* ``folders``   - ``ROOT/<class>/*.png|jpg|...``, one class per folder, no masks.

Bad input is never a crash and never silent: each unusable file becomes a :class:`Problem` (path, kind,
reason). Only a data set with nothing usable raises :class:`DatasetError`.
"""

# Importing the layout modules registers them; the order here does not matter (``priority`` does).
from lungaudit.data.layouts import covid, folders, manifest, segonly  # noqa: F401
from lungaudit.data.layouts.base import (
    AUTO,
    LAYOUT_TYPES,
    DatasetError,
    Layout,
    detect_layout,
    detection_order,
    get_layout,
    layout_names,
    register_layout,
)
from lungaudit.data.layouts.load import Inspection, inspect_dataset, load_dataset, scan_dataset, write_problems_csv
from lungaudit.data.layouts.manifest import MANIFEST_NAME
from lungaudit.data.layouts.metadata import source_from_url

LAYOUTS: tuple[str, ...] = layout_names()  # "auto" plus every layout registered above

__all__ = [
    "AUTO",
    "LAYOUTS",
    "LAYOUT_TYPES",
    "MANIFEST_NAME",
    "DatasetError",
    "Inspection",
    "Layout",
    "detect_layout",
    "detection_order",
    "get_layout",
    "inspect_dataset",
    "layout_names",
    "load_dataset",
    "register_layout",
    "scan_dataset",
    "source_from_url",
    "write_problems_csv",
]
