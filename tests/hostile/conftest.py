"""Session fixtures of the hostile suite: a run whose classes have hostile names, a data set whose
labels, sources, folder and file names are hostile, and one CLI audit of it (the only audit the
suite runs on the whole set; everything else fails before the models are used, or uses 1-2 images)."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import Result

from hostile.hostile_kit import HOSTILE_CLASSES, HOSTILE_DIR, HOSTILE_FILE, HOSTILE_SOURCE, clone_run, invoke, tree

TINY_CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
PER_CLASS = 3


@pytest.fixture(scope="session")
def hostile_run(tiny_run, tmp_path_factory) -> Path:
    """``tiny_run``'s weights, its four classes renamed to HOSTILE_CLASSES."""
    return clone_run(tiny_run.run_dir, tmp_path_factory.mktemp("hostile_run") / "run", HOSTILE_CLASSES)


@pytest.fixture(scope="session")
def hostile_data(tiny_synth, tmp_path_factory) -> Path:
    """A manifest data set in a folder named HOSTILE_DIR: 3 test images per class with masks, hostile
    labels (HOSTILE_CLASSES), source and file names, and every extra column of the synthetic manifest."""
    root = tmp_path_factory.mktemp("hostile_data") / HOSTILE_DIR
    with open(tiny_synth / "manifest.csv", newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = list(reader.fieldnames or []), list(reader)
    out, taken = [], dict.fromkeys(TINY_CLASSES, 0)
    for row in rows:
        label = row["label"]
        if taken[label] == PER_CLASS:
            continue
        i = taken[label] = taken[label] + 1
        name = HOSTILE_FILE.format(i=i, label=label)
        for col, sub in (("path", "images"), ("mask", "masks")):
            (root / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(tiny_synth / row[col], root / sub / name)
            row[col] = f"{sub}/{name}"
        row.update(label=HOSTILE_CLASSES[TINY_CLASSES.index(label)], source=HOSTILE_SOURCE, twin="")
        out.append(row)
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(out)
    return root


@dataclass
class HostileAudit:
    base: Path  # everything the audit may touch lies under here
    audit_dir: Path
    new_files: set[Path]  # files that appeared under ``base`` during the audit
    result: Result


@pytest.fixture(scope="session")
def hostile_audit(hostile_run, hostile_data, tmp_path_factory) -> HostileAudit:
    """``lungaudit audit`` of ``hostile_data`` with ``hostile_run``, its output folder nested seven deep
    so that a name climbing out with ``../`` would still land (visibly) under ``base``."""
    base = tmp_path_factory.mktemp("hostile_audit")
    project = base / "a" / "b" / "c" / "d" / "e" / "f" / "g"
    project.mkdir(parents=True)
    before = tree(base)
    res = invoke("audit", hostile_data, "--run", hostile_run, "--project", project, "--device", "cpu",
                 "--workers", "0", "--set", "audit.out_threshold=0.0", code=0)  # fmt: skip
    return HostileAudit(base, project / "audit" / "exp", tree(base) - before, res)
