"""The web page in a real browser: upload -> prediction, verdict and overlays; JSON download; an error."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lungaudit as la

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "screenshot_serve.py"


def _chromium() -> str | None:
    return next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)


def test_page_uploads_and_shows_the_audited_prediction(tiny_run, test_images, tmp_path):
    if _chromium() is None:
        pytest.skip("Chromium not installed (Debian: apt-get install -y chromium)")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright not installed (pip install playwright; no `playwright install` needed)")
    out = tmp_path / "shots"
    # The script must import the lungaudit under test, not whichever one is installed.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(la.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--run", str(tiny_run.run_dir), "--image", str(test_images[0]), "--out", str(out),
         "--chromium", _chromium()],
        capture_output=True, text=True, timeout=400, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shown = json.loads(proc.stdout)
    expected = la.predict(test_images[0], run=tiny_run.run_dir, device="cpu").predictions[0]
    assert shown["pred"] == expected.row.pred and shown["verdict"] == expected.verdict
    assert shown["pictures"][:2] == ["outline", "gradcam"]
    assert "not an image" in shown["error_shown"] and shown["download"]["file"].endswith(".lungaudit.json")
    assert Path(shown["screenshot"]).stat().st_size > 10_000
