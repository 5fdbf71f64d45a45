"""The report in a real browser: paging, filters, decisions and the download (needs Chromium + playwright)."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lungaudit.report.html import PAGE_SIZE, write_report

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "screenshot_report.py"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def chromium_or_skip() -> str:
    """The system Chromium; skips (with the reason printed) where it or playwright is missing."""
    path = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)
    if path is None:
        pytest.skip("Chromium not installed (Debian: apt-get install -y chromium)")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright not installed (pip install playwright; no `playwright install` needed)")
    return path


def test_screenshot_script_exercises_the_report(make_audit, tmp_path):
    chromium = chromium_or_skip()
    d = make_audit(n=2 * PAGE_SIZE + 24, thumbs=True)  # more flagged images than one page holds
    report = write_report(d)
    out = tmp_path / "shots"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(report), "--out", str(out), "--chromium", chromium],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["mode"] == "playwright"
    assert result["total"] > PAGE_SIZE and result["cards"] == PAGE_SIZE  # one page of cards in the DOM
    assert 0 < result["filter"]["visible"] < result["filter"]["total"]
    assert result["decision_pages"] == [1, 2] and result["persisted"] is True
    for shot in result["screenshots"]:
        assert Path(shot).stat().st_size > 1000
    with open(out / "decisions.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["key", "decision", "new_label"]
    assert rows[1:] == result["decisions"]
    assert sorted(r[1] for r in rows[1:]) == ["exclude", "keep", "relabel"]


def test_a_hostile_class_label_leaves_the_javascript_running(make_audit):
    """``<!--<script>`` inside script content would hide report.js from the parser: no cards, no filters."""
    from playwright.sync_api import sync_playwright

    chromium = chromium_or_skip()
    evil = "Normal<!--<script>"
    report = write_report(make_audit(classes=["COVID", "Lung_Opacity", evil, "Viral Pneumonia"]))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report.resolve().as_uri())
            page.wait_for_selector("#gallery-cards article.card", timeout=30_000)
            page.select_option("#filter-class", evil)
            classes = page.locator("#gallery-cards article.card").evaluate_all("els => els.map(e => e.dataset.class)")
            options = page.locator("#gallery-cards select.relabel").first.locator("option").all_inner_texts()
        finally:
            browser.close()
    assert classes and set(classes) == {evil}
    assert evil in options
    assert not errors
