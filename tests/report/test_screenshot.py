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


def test_a_relabel_without_class_is_shown_wherever_it_is(make_audit):
    """Download refuses a relabel with no class, and brings that card back from another page under
    filters that hide it."""
    from playwright.sync_api import sync_playwright

    chromium = chromium_or_skip()
    report = write_report(make_audit(n=2 * PAGE_SIZE + 24))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
        try:
            page = browser.new_page(accept_downloads=True)
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(report.resolve().as_uri())
            page.click("#pager-top [data-go=next]")
            card = page.locator("#gallery-cards article.card").first
            key, region = card.get_attribute("data-key"), card.get_attribute("data-region")
            card.locator("input[value=relabel]").check()  # a relabel, but no class picked
            other = next(v for v in page.locator("#filter-region option").evaluate_all("els => els.map(e => e.value)")
                         if v not in ("*", region))
            page.select_option("#filter-region", other)  # hides the card, back on page 1
            downloads: list[object] = []
            page.on("download", lambda d: downloads.append(d))
            page.click("#download")
            # Wait for the page to settle on the refused card (a fixed sleep was flaky on a loaded CI box).
            page.wait_for_function(
                "() => document.querySelector('#gallery-cards article.card.invalid') !== null"
                " && document.querySelector('#pager-top .page-input').value === '2'", timeout=10_000)
            bad = page.locator("#gallery-cards article.card.invalid")
            shown = (bad.count(), bad.first.get_attribute("data-key"), page.locator("#filter-region").input_value(),
                     page.locator("#pager-top .page-input").input_value())
        finally:
            browser.close()
    assert dialogs == ["1 relabel decision(s) have no new class selected."]
    assert not downloads
    assert shown == (1, key, "*", "2")  # filters cleared, its page opened, the card marked
