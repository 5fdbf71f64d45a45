#!/usr/bin/env python
"""Render a lungaudit HTML report in headless Chromium, screenshot it and exercise its JavaScript.

    python scripts/screenshot_report.py runs/audit/exp/report.html --out shots/

With Playwright (``pip install playwright``; no ``playwright install`` needed, the system Chromium
is used) it saves ``summary.png``, ``bias.png`` and ``gallery_filtered.png`` (the top of the gallery,
filtered by region, with one decision made), and checks against the report's own data block (the
expected cards are computed here, not by the page's JavaScript) that:
  * the first page shows the first cards in gallery order and the counts cover every page,
  * selecting a region filter shows exactly the images carrying that region, across pages,
  * a decision on page 1 and decisions on page 2 all reach "Download decisions.csv" (saved as
    ``decisions.csv``), and they survive a reload (localStorage) and a filter change.
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
CARDS = "#gallery-cards article.card"
# The report is ready when the document is parsed, the gallery's cards (or, for an empty gallery, its
# data) are there and every thumbnail on the page is decoded.
READY = """() => {
  if (document.readyState === "loading") { return false; }  // thumbnails after the first page still parsing
  const data = JSON.parse(document.getElementById("gallery-data").textContent);
  const imgs = Array.from(document.querySelectorAll("#gallery-cards img"));
  return (data.length === 0 || document.querySelectorAll("#gallery-cards article.card").length > 0)
    && imgs.every(i => i.complete && i.naturalWidth > 0)
    && !document.querySelector("#gallery-cards article.card[data-pending]");
}"""
GALLERY_SHOT_HEIGHT = 900  # px of the gallery's top in gallery_filtered.png (a page holds dozens of cards)


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


# ------------------------------------------------------------------------------------ page helpers


def shown_keys(page) -> list[str]:
    return page.locator(CARDS).evaluate_all("els => els.map(e => e.dataset.key)")


def text_of(page, selector: str) -> str:
    return page.locator(selector).first.inner_text().strip()


def page_size(page) -> int:
    return int(page.locator("#page-size").input_value())


def expect_cards(page, keys: list[str], page_no: int, what: str) -> None:
    """The cards on page ``page_no`` (1-based) are exactly ``keys``' slice for it, in order."""
    size = page_size(page)
    want = keys[(page_no - 1) * size : page_no * size]
    got = shown_keys(page)
    check(got == want, f"{what}, page {page_no}: cards {got[:3]}... expected {want[:3]}... ({len(got)} vs {len(want)})")
    check(text_of(page, "#visible-count") == str(len(keys)), f"{what}: visible-count is not {len(keys)}")
    pages = max(1, -(-len(keys) // size))
    check(text_of(page, "#pager-top .page-count") == str(pages), f"{what}: page count is not {pages}")


def go_to_page(page, n: int) -> None:
    page.locator("#pager-top .page-input").fill(str(n))
    page.locator("#pager-top .page-input").dispatch_event("change")
    page.wait_for_function(READY)


def shot(page, out: Path, name: str, result: dict, selector: str | None = None) -> None:
    path = out / name
    if selector is None:
        page.screenshot(path=str(path))
    else:
        # Page coordinates (a full-page clip is not relative to the scrolled viewport).
        box = page.locator(selector).evaluate(
            "e => { const r = e.getBoundingClientRect();"
            " return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height}; }"
        )
        box["height"] = min(box["height"], GALLERY_SHOT_HEIGHT)
        page.screenshot(path=str(path), clip=box, full_page=True)
    result["screenshots"].append(str(path))


# ------------------------------------------------------------------------------------ the checks


def check_filter(page, records: list[dict], region: str | None) -> dict:
    """Select a region and compare the cards and counts with the records carrying it."""
    options = page.locator("#filter-region option").evaluate_all("els => els.map(e => e.value)")
    choices = [o for o in options if o != "*"]
    check(bool(choices), "the region filter offers no region")
    regions = [r["region"] for r in records]
    if region is None:  # prefer a region that actually narrows the gallery
        narrowing = [o for o in choices if 0 < regions.count(o) < len(records)]
        region = (narrowing or choices)[0]
    check(region in choices, f"region {region!r} is not offered by the filter ({choices})")
    page.select_option("#filter-region", region)
    page.wait_for_function(READY)
    keys = [r["key"] for r in records if r["region"] == region]
    expect_cards(page, keys, 1, f"region {region!r}")
    return {"region": region, "visible": len(keys), "total": len(records)}


def decide(page, card, decision: str, records_by_key: dict[str, dict], class_names: list[str]) -> list[str]:
    """Make one decision on a card; returns the expected decisions.csv row."""
    key = card.get_attribute("data-key") or ""
    if decision == "relabel":
        label = records_by_key[key]["label"]
        new = next(c for c in class_names if c != label)
        card.locator("select.relabel").select_option(new)
        return [key, "relabel", new]
    card.locator(f"input[value={decision}]").check()
    return [key, decision, ""]


def ensure_two_pages(page, records: list[dict]) -> bool:
    """Clear the filters and, if the gallery fits on one page, pick the smallest page size."""
    for sel in ("#filter-class", "#filter-region", "#filter-reason"):
        page.select_option(sel, "*")
    sizes = page.locator("#page-size option").evaluate_all("els => els.map(e => Number(e.value))")
    if len(records) <= page_size(page):
        page.select_option("#page-size", str(min(sizes)))
    page.wait_for_function(READY)
    return len(records) > page_size(page)


def download(page, out: Path) -> list[list[str]]:
    with page.expect_download() as dl:
        page.click("#download")
    target = out / "decisions.csv"
    dl.value.save_as(str(target))
    check(dl.value.suggested_filename == "decisions.csv", f"download is named {dl.value.suggested_filename!r}")
    rows = list(csv.reader(io.StringIO(target.read_text(encoding="utf-8"))))
    check(rows[0] == ["key", "decision", "new_label"], f"bad CSV header {rows[0]}")
    return rows[1:]


def check_decisions(page, out: Path, records: list[dict], class_names: list[str], result: dict) -> None:
    """Exclude a card on page 1 (filtered), relabel and keep cards on page 2, download, reload."""
    by_key = {r["key"]: r for r in records}
    want = [decide(page, page.locator(CARDS).nth(0), "exclude", by_key, class_names)]
    shot(page, out, "gallery_filtered.png", result, "#gallery")
    result["decision_pages"] = [1]
    if ensure_two_pages(page, records):
        go_to_page(page, 2)
        expect_cards(page, [r["key"] for r in records], 2, "page 2")
        decided = {w[0] for w in want}
        fresh = [i for i, k in enumerate(shown_keys(page)) if k not in decided][:2]
        for i, decision in zip(fresh, ("relabel", "keep")):
            want.append(decide(page, page.locator(CARDS).nth(i), decision, by_key, class_names))
        result["decision_pages"].append(2)
    check(text_of(page, "#reviewed-count") == str(len(want)), "reviewed-count text is wrong")
    order = {r["key"]: i for i, r in enumerate(records)}
    want.sort(key=lambda w: order[w[0]])  # the download lists decisions in gallery order
    got = download(page, out)
    check(got == want, f"decisions.csv holds {got}, expected {want}")
    result["decisions"] = want
    page.reload()
    page.wait_for_function(READY)
    check(text_of(page, "#reviewed-count") == str(len(want)), "decisions were not kept across a reload")
    check(download(page, out) == want, "decisions.csv after a reload differs")
    result["persisted"] = True


def run_checks(page, out: Path, region: str | None, result: dict) -> None:
    records = page.evaluate("JSON.parse(document.getElementById('gallery-data').textContent)")
    meta = page.evaluate("JSON.parse(document.getElementById('report-meta').textContent)")
    result["total"] = len(records)
    result["cards"] = page.locator(CARDS).count()  # on the first page
    if not records:
        return
    expect_cards(page, [r["key"] for r in records], 1, "unfiltered")
    result["filter"] = check_filter(page, records, region)
    # Sticky bars would be painted over the middle of an element screenshot; unstick them.
    page.add_style_tag(content="nav, .filters { position: static !important; }")
    check_decisions(page, out, records, meta["class_names"], result)


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
            page.wait_for_function(READY)
            shot(page, out, "summary.png", result)
            page.locator("#bias").screenshot(path=str(out / "bias.png"))
            result["screenshots"].append(str(out / "bias.png"))
            run_checks(page, out, region, result)
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
