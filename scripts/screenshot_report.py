#!/usr/bin/env python
"""Render a lungaudit HTML report in headless Chromium, screenshot it and exercise its JavaScript.

    python scripts/screenshot_report.py runs/audit/exp/report.html --out shots/

With Playwright (``pip install playwright``; no ``playwright install`` needed, the system Chromium
is used) it saves ``summary.png``, ``bias.png`` and ``gallery_filtered.png``, and checks that:
  * selecting a region filter shows exactly the cards carrying that region,
  * choosing "exclude" / a relabel class and clicking "Download decisions.csv" downloads a CSV with
    exactly those decisions (saved as ``decisions.csv``).
Without Playwright it falls back to ``chromium --headless --screenshot`` for ``summary.png`` only.
Exit code 0 on success, 1 when a check fails, 2 when Chromium is missing.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def find_chromium(explicit: str | None = None) -> str | None:
    for cand in ([explicit] if explicit else []) + ["/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"]:
        path = shutil.which(cand) if cand else None
        if path:
            return path
    return None


class CheckFailed(AssertionError):
    pass


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise CheckFailed(msg)


def fallback_screenshot(chromium: str, report: Path, out: Path) -> dict:
    shot = out / "summary.png"
    cmd = [chromium, *CHROMIUM_ARGS, "--window-size=1300,1800", f"--screenshot={shot}", report.resolve().as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    check(shot.is_file() and shot.stat().st_size > 0, "chromium wrote no screenshot")
    return {"mode": "chromium-cli", "screenshots": [str(shot)]}


def playwright_checks(chromium: str, report: Path, out: Path, region: str | None) -> dict:
    from playwright.sync_api import sync_playwright

    result: dict = {"mode": "playwright", "screenshots": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            ctx = browser.new_context(accept_downloads=True, viewport={"width": 1300, "height": 1000})
            page = ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: d.dismiss())
            page.goto(report.resolve().as_uri())
            page.wait_for_load_state("load")

            shot = out / "summary.png"
            page.screenshot(path=str(shot))
            result["screenshots"].append(str(shot))
            shot = out / "bias.png"
            page.locator("#bias").screenshot(path=str(shot))
            result["screenshots"].append(str(shot))

            cards = page.locator("article.card")
            total = cards.count()
            result["cards"] = total
            check(page.locator("article.card:visible").count() == total, "not every card is visible before filtering")
            if total == 0:
                check(not errors, f"JavaScript errors: {errors}")
                return result

            # Expected counts come from the cards' data attributes, independently of the page's JS.
            regions = cards.evaluate_all("els => els.map(e => e.dataset.region)")
            options = page.locator("#filter-region option").evaluate_all("els => els.map(e => e.value)")
            choices = [o for o in options if o != "*"]
            check(bool(choices), "the region filter offers no region")
            if region is None:  # prefer a region that actually narrows the gallery
                narrowing = [o for o in choices if 0 < regions.count(o) < total]
                region = (narrowing or choices)[0]
            check(region in choices, f"region {region!r} is not offered by the filter ({choices})")
            expected = regions.count(region)
            page.select_option("#filter-region", region)
            visible = page.locator("article.card:visible")
            check(visible.count() == expected, f"region {region!r}: {visible.count()} cards visible, expected {expected}")
            check(page.locator("#visible-count").inner_text().strip() == str(expected), "visible-count text is wrong")
            result["filter"] = {"region": region, "visible": expected, "total": total}
            shot = out / "gallery_filtered.png"
            # Sticky bars would be painted over the middle of an element screenshot; unstick them.
            page.add_style_tag(content="nav, .filters { position: static !important; }")
            page.locator("#gallery").screenshot(path=str(shot))
            result["screenshots"].append(str(shot))

            # Decisions: exclude the first visible card, relabel the next one (if any), download.
            want: list[tuple[str, str, str]] = []
            first = visible.nth(0)
            first.locator("input[value=exclude]").check()
            want.append((first.get_attribute("data-key") or "", "exclude", ""))
            if expected > 1:
                second = visible.nth(1)
                classes = second.locator("select.relabel option").evaluate_all("els => els.map(e => e.value)")
                new = [c for c in classes if c and c != second.get_attribute("data-label")][0]
                second.locator("select.relabel").select_option(new)
                want.append((second.get_attribute("data-key") or "", "relabel", new))
            check(page.locator("#reviewed-count").inner_text().strip() == str(len(want)), "reviewed-count text is wrong")
            with page.expect_download() as dl:
                page.click("#download")
            target = out / "decisions.csv"
            dl.value.save_as(str(target))
            check(dl.value.suggested_filename == "decisions.csv", f"download is named {dl.value.suggested_filename!r}")
            rows = list(csv.reader(io.StringIO(target.read_text(encoding="utf-8"))))
            check(rows[0] == ["key", "decision", "new_label"], f"bad CSV header {rows[0]}")
            check(sorted(map(tuple, rows[1:])) == sorted(want), f"decisions.csv holds {rows[1:]}, expected {want}")
            result["decisions"] = [list(w) for w in want]
            check(not errors, f"JavaScript errors: {errors}")
        finally:
            browser.close()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="report.html written by `lungaudit report`")
    ap.add_argument("--out", type=Path, required=True, help="folder for the screenshots and decisions.csv")
    ap.add_argument("--region", default=None, help="region to filter on (default: one that narrows the gallery)")
    ap.add_argument("--chromium", default=None, help="Chromium binary (default: /usr/bin/chromium or on PATH)")
    args = ap.parse_args(argv)

    if not args.report.is_file():
        print(f"error: {args.report} does not exist", file=sys.stderr)
        return 2
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("error: Chromium not found (Debian: apt-get install -y chromium)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        try:
            import playwright  # noqa: F401
        except ImportError:
            print("note: playwright is not installed; taking the summary screenshot only", file=sys.stderr)
            result = fallback_screenshot(chromium, args.report, args.out)
        else:
            result = playwright_checks(chromium, args.report, args.out, args.region)
    except CheckFailed as e:
        print(f"check failed: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
