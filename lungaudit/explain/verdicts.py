"""Recorded sanity verdicts: what ``MethodInfo.sanity`` shows, and where it comes from.

A verdict is a measurement (Adebayo et al. 2018; :mod:`.sanity`), not a property a method's author
declares, so it is never written in a class definition. ``sanity_verdicts.json`` beside this module
holds the verdicts of one recorded ``lungaudit sanity`` run (which run, model, images and date are in
its ``source``); :func:`apply_verdicts` copies them into each measured method's ``MethodInfo`` when
the registry loads. A method absent from the file keeps ``sanity=None``: not measured.

The file is (re)written from a sanity run's ``sanity.json`` with
``python scripts/record_sanity_verdicts.py runs/sanity/<name>/sanity.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from lungaudit.explain.base import CAM_METHODS

log = logging.getLogger(__name__)

VERDICTS_FILE = "sanity_verdicts.json"
VERDICTS = ("pass", "fail", "undefined")


def packaged_verdicts() -> Path:
    """The verdicts file shipped inside the package (found without a checkout)."""
    return Path(str(resources.files("lungaudit.explain").joinpath(VERDICTS_FILE)))


def load_verdicts(path: Path | None = None) -> dict[str, Any]:
    """The recorded verdicts (``{"source": {...}, "methods": {name: record}}``); {} when none are.

    A malformed file is logged and ignored: a broken record must not stop the explanations, and
    showing no verdict is the honest fallback.
    """
    path = path or packaged_verdicts()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.warning("%s: unreadable sanity verdicts (%s); no method shows one", path, e)
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("methods"), dict):
        log.warning("%s: sanity verdicts need a 'methods' mapping; no method shows one", path)
        return {}
    return data


def verdict_note(record: Mapping[str, Any], source: Mapping[str, Any]) -> str:
    """One line a person can check: each test's correlation and verdict, and what was measured."""
    parts = []
    for key, label in (("model_randomization", "model randomisation"), ("data_randomization", "data randomisation")):
        test = record.get(key)
        if isinstance(test, Mapping) and test.get("spearman") is not None:
            parts.append(f"{label}: Spearman {float(test['spearman']):.2f} ({test.get('verdict', '?')})")
    where = ", ".join(str(source[k]) for k in ("model", "images", "date") if source.get(k))
    return "; ".join(parts) + (f" [{where}]" if where else "")


def apply_verdicts(data: Mapping[str, Any] | None = None) -> list[str]:
    """Set ``sanity``/``sanity_note`` on every registered method that ``data`` measured; returns their names."""
    data = load_verdicts() if data is None else data
    methods, source = data.get("methods", {}), data.get("source", {})
    applied = []
    for name, record in methods.items():
        if name not in CAM_METHODS or not isinstance(record, Mapping) or record.get("verdict") not in VERDICTS:
            continue
        cls = CAM_METHODS.get(name)
        cls.info = replace(cls.info, sanity=str(record["verdict"]), sanity_note=verdict_note(record, source))
        applied.append(name)
    return applied


__all__ = ["VERDICTS", "VERDICTS_FILE", "apply_verdicts", "load_verdicts", "packaged_verdicts", "verdict_note"]
