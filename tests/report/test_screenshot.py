"""The report in a real browser: filters and the decisions download (needs Chromium + playwright)."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lungaudit.report.html import write_report

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "screenshot_report.py"


def _chromium() -> str | None:
    return next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)


def test_screenshot_script_exercises_the_report(make_audit, tmp_path):
    if _chromium() is None:
        pytest.skip("Chromium not installed (Debian: apt-get install -y chromium)")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright not installed (pip install playwright; no `playwright install` needed)")
    report = write_report(make_audit())
    out = tmp_path / "shots"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(report), "--out", str(out), "--chromium", _chromium()],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["mode"] == "playwright"
    assert 0 < result["filter"]["visible"] < result["filter"]["total"]
    for shot in result["screenshots"]:
        assert Path(shot).stat().st_size > 1000
    with open(out / "decisions.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["key", "decision", "new_label"]
    assert [r[1] for r in rows[1:]] == [d[1] for d in result["decisions"]]
