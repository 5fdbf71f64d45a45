"""Where outputs go: an unwritable destination is exit 2 naming it, and every output respects the umask.

Issue 12, point 10: every output used to be created 0600 (``mkstemp``), so curators on a shared
server could not open ``report.html``. Training's run folder is covered in
tests/training/test_resume_identical.py; this covers every other command.
"""

from __future__ import annotations

import csv
import os
import shutil
import stat
from pathlib import Path

import pytest

from hostile.hostile_kit import clone_run, invoke, names, tree, write


@pytest.fixture
def small(tiny_synth, tmp_path) -> Path:
    """A two-image manifest data set (fast to audit)."""
    root = tmp_path / "data"
    root.mkdir()
    rows = []
    for label in ("Normal", "COVID"):
        shutil.copy(tiny_synth / label / "images" / f"{label}-1.png", root / f"{label}.png")
        rows.append({"path": f"{label}.png", "label": label})
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label"])
        w.writeheader()
        w.writerows(rows)
    return root


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_every_output_respects_the_umask(small, tiny_run, tmp_path, mask):
    out = tmp_path / "out"
    old = os.umask(mask)
    try:
        run = clone_run(tiny_run.run_dir, tmp_path / "run")
        invoke("audit", small, "--run", run, "--project", out, "--device", "cpu", "--workers", "0",
               "--set", "audit.out_threshold=0.0", code=0)  # fmt: skip
        audit = out / "audit" / "exp"
        invoke("gate", audit, "--max-flag-rate", "1.0", code=0)
        invoke("compare", audit, audit, code=0)
        invoke("inspect", small, "--problems-csv", out / "inspect" / "problems.csv", code=0)
        dec = write(tmp_path / "dec.csv", "key,decision,new_label\nNormal.png,exclude,\n")
        invoke("apply-review", dec, small, "--out", out / "clean", code=0)
        invoke("config", "--dump", out / "lungaudit.yaml", code=0)
        invoke("synth", out / "synth", "--n-per-class", "1", "--size", "32", "--workers", "1", code=0)
    finally:
        os.umask(old)
    files, dirs = tree(out), [out, *(p for p in out.rglob("*") if p.is_dir())]
    assert {"report.html", "summary.json", "audit.csv", ".lock", "gate.json", "compare.json", "manifest.csv", "lungaudit.yaml"} <= {p.name for p in files}
    assert any(p.suffix == ".npz" for p in files)  # the audit's partials (overlays only exist when an image is flagged)
    wrong = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files if stat.S_IMODE(p.stat().st_mode) != 0o666 & ~mask}
    assert not wrong, wrong
    wrong = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in dirs if stat.S_IMODE(p.stat().st_mode) != 0o777 & ~mask}
    assert not wrong, wrong


@pytest.mark.parametrize(
    "args",
    [
        ["report", "{audit}", "--out", "{file}/r.html"], ["gate", "{audit}", "--max-flag-rate", "1", "--junit", "{file}/j.xml"],
        ["compare", "{audit}", "{audit}", "--out", "{file}/c.json"], ["apply-review", "{dec}", "{data}", "--out", "{file}/o"],
        ["audit", "{data}", "--run", "{run}", "--project", "{file}", "--device", "cpu"], ["inspect", "{data}", "--problems-csv", "{file}/p.csv"],
        ["train", "{data}", "--seg-from", "{run}", "--stage", "cls", "--set", "project={file}", "--device", "cpu"], ["synth", "{file}/s", "--n-per-class", "1", "--size", "32"],
        ["config", "--dump", "{file}/c.yaml"],
    ],
    ids=lambda a: a[0],
)  # fmt: skip
def test_unwritable_destinations(hostile_audit, small, tiny_run, tmp_path, args):
    """A file where a folder should be: exit 2 naming the path, never a traceback."""
    blocker = write(tmp_path / "[/x] a file", "not a folder")
    dec = write(tmp_path / "dec.csv", "key,decision,new_label\n")
    run = clone_run(tiny_run.run_dir, tmp_path / "run")
    fill = {"audit": hostile_audit.audit_dir, "file": blocker, "dec": dec, "data": small, "run": run}
    res = invoke(*[a.format(**fill) for a in args], code=2)
    assert names(res, blocker), res.output
    assert blocker.read_text() == "not a folder"
