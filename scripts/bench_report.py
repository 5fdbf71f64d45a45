#!/usr/bin/env python
"""The HTML report at scale: bytes per flagged image, and load and filter times in headless Chromium.

    python scripts/bench_report.py                         # 2000 flagged images, built without a model
    python scripts/bench_report.py --flagged 5000 --runs 3
    python scripts/bench_report.py --audit runs/audit/exp  # an existing audit folder (rewrites its report.html)
    python scripts/bench_report.py --report r.html --json  # measure a written report (used by the tests)
    python scripts/bench_report.py --record                # also write the BENCHMARKS.md section

Without ``--audit``/``--report`` it writes a schema-valid audit folder with the test suite's fixture
writer (audit-size JPEG thumbnails drawn from phantoms, hard-linked full overlays) into a temporary
folder. Each run opens the report in a fresh browser context (empty cache and storage) and times:

* **load**: from the start of navigation until the gallery's first page is in the DOM with every
  thumbnail on it decoded (Python's clock around Playwright, so an upper bound);
* **whole file parsed**: from the start of navigation until the load event (every thumbnail parsed);
* **filter**: from selecting a region that narrows the gallery (after the load event) until the first
  page of its result is in the DOM, its thumbnails decoded and the count updated.

The page's own ``performance`` marks (``gallery-filter``, ``gallery-rendered``) give the in-page share
of each. Chromium is the system one (``/usr/bin/chromium``); never ``playwright install``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# This checkout's package and fixture writer, never another checkout's editable install.
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
from screenshot_report import CHROMIUM_ARGS, find_chromium  # noqa: E402

TARGET_KB, TARGET_S = 30.0, 2.0  # issue 10: <= 30 KB of HTML per flagged image, load and filter < 2 s
READY = """(want) => {
  const cards = Array.from(document.querySelectorAll("#gallery-cards article.card"));
  const imgs = Array.from(document.querySelectorAll("#gallery-cards img"));
  const count = document.getElementById("visible-count");
  return cards.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0)
    && !document.querySelector("#gallery-cards article.card[data-pending]")
    && (want == null || (count.textContent === String(want.n) && cards.every(c => c.dataset.region === want.region)));
}"""
IN_PAGE = """() => {
  const marks = performance.getEntriesByType("mark");
  const t = name => marks.filter(m => m.name === name).map(m => m.startTime);
  const nav = performance.getEntriesByType("navigation")[0];
  return {rendered: t("gallery-rendered"), filter: t("gallery-filter"), response_end: nav.responseEnd,
          dom_content_loaded: nav.domContentLoadedEventEnd};
}"""


def build_audit(root: Path, flagged: int) -> Path:
    """A model-free audit folder with ``flagged`` flagged images, as the test suite writes it."""
    from tests.report.conftest import write_audit_dir

    return write_audit_dir(root, n=flagged, flagged_only=True, thumbs=True, realistic=True)


def narrowing_region(records: list[dict]) -> tuple[str, int]:
    """The region that narrows the gallery the least (the most cards left to render)."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r["region"]] = counts.get(r["region"], 0) + 1
    narrowing = {k: v for k, v in counts.items() if k and v < len(records)} or counts
    region = max(narrowing, key=lambda k: narrowing[k])
    return region, narrowing[region]


def one_run(browser, uri: str) -> dict:
    """Load and filter once in a fresh context; seconds by Python's clock, ms by the page's."""
    ctx = browser.new_context(viewport={"width": 1300, "height": 1000})
    try:
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        t0 = time.perf_counter()
        page.goto(uri, wait_until="commit")
        page.wait_for_function(READY, arg=None, polling="raf", timeout=60_000)
        load_s = time.perf_counter() - t0
        page.wait_for_load_state("load")  # filter once every thumbnail is parsed, as a reader would
        parsed_s = time.perf_counter() - t0
        records = page.evaluate("JSON.parse(document.getElementById('gallery-data').textContent)")
        region, n = narrowing_region(records)
        t0 = time.perf_counter()
        page.select_option("#filter-region", region)
        page.wait_for_function(READY, arg={"region": region, "n": n}, polling="raf", timeout=60_000)
        filter_s = time.perf_counter() - t0
        marks = page.evaluate(IN_PAGE)
        if errors:
            raise RuntimeError(f"JavaScript errors: {errors}")
        return {
            "load_s": load_s, "parsed_s": parsed_s, "filter_s": filter_s, "records": len(records), "region": region, "matching": n,
            "cards_on_page": page.locator("#gallery-cards article.card").count(),
            "in_page_first_render_ms": marks["rendered"][0],
            "in_page_filter_ms": marks["rendered"][-1] - marks["filter"][-1],
            "response_end_ms": marks["response_end"], "dom_content_loaded_ms": marks["dom_content_loaded"],
        }
    finally:
        ctx.close()


def measure(report: Path, chromium: str, runs: int = 1) -> dict:
    """Size per flagged image and ``runs`` load/filter timings of a written report."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            results = [one_run(browser, report.resolve().as_uri()) for _ in range(runs)]
            version = browser.version
        finally:
            browser.close()
    size = report.stat().st_size
    flagged = results[0]["records"]
    return {
        "report": str(report), "html_bytes": size, "flagged": flagged,
        "kb_per_flagged": size / 1024 / flagged if flagged else None,
        "load_s": [r["load_s"] for r in results], "parsed_s": [r["parsed_s"] for r in results],
        "filter_s": [r["filter_s"] for r in results],
        "runs": results, "chromium": version, "load_average": os.getloadavg()[0],
    }


def table(m: dict) -> str:
    lines = [
        "| run | load s | first page (in page) ms | whole file parsed s | filter s | filter (in page) ms | cards matching |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(m["runs"], 1):
        lines.append(
            f"| {i} | {r['load_s']:.2f} | {r['in_page_first_render_ms']:.0f} | {r['parsed_s']:.2f} | "
            f"{r['filter_s']:.2f} | {r['in_page_filter_ms']:.1f} | {r['matching']} of {r['records']} ({r['region']}) |"
        )
    return "\n".join(lines)


def record(m: dict, command: str, built: bool) -> None:
    from _bench_common import write_benchmark_section

    source = ("a model-free audit folder from the test fixture writer (audit-size JPEG thumbnails "
              "drawn from phantoms, 160 px wide, quality 70)") if built else f"the audit folder of `{m['report']}`"
    body = (
        f"Measured {dt.date.today().isoformat()} on {platform.machine()} {platform.system()}, {os.cpu_count()} CPU "
        f"cores shared with other work (load average {m['load_average']:.0f} at the end), headless Chromium "
        f"{m['chromium']}; `{command}`.\n"
        f"{m['flagged']} flagged images, {source}. Targets (issue 10): at most {TARGET_KB:.0f} KB of HTML per "
        f"flagged image; load and filter under {TARGET_S:.0f} s each.\n\n"
        f"**{m['kb_per_flagged']:.1f} KB of HTML per flagged image** ({m['html_bytes'] / 1e6:.1f} MB in all; "
        "before paging and thumbnails: about 170 KB per flagged image, 168 MB at 1000).\n\n"
        f"{table(m)}\n\n"
        "Load: navigation start until the first page of cards is in the DOM with its thumbnails decoded, by "
        "Python's clock around Playwright (each run a fresh browser context). The first page's thumbnails sit "
        "before the script and the others after it, so the first page does not wait for the whole file; "
        "'whole file parsed' is navigation start until the load event, when every thumbnail is in. Filter: "
        "selecting a region (after the load event) until its first page is drawn, decoded and counted. The "
        "in-page columns are the page's own `performance` marks (first render after navigation start; "
        "filter handler to render)."
    )
    write_benchmark_section(ROOT / "BENCHMARKS.md", "HTML report at scale", body)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--audit", type=Path, help="an audit folder: (re)write its report.html and measure it")
    src.add_argument("--report", type=Path, help="a written report.html: measure only")
    ap.add_argument("--flagged", type=int, default=2000, help="flagged images of the built audit folder")
    ap.add_argument("--runs", type=int, default=3, help="fresh-context loads to time")
    ap.add_argument("--chromium", default=None, help="Chromium binary (default: /usr/bin/chromium or on PATH)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--record", action="store_true", help="write the 'HTML report at scale' section of BENCHMARKS.md")
    args = ap.parse_args(argv)

    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("error: Chromium not found (Debian: apt-get install -y chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench_report_") as tmp:
        report = args.report
        if report is None:
            from lungaudit.report.html import write_report

            print(f"report code: {Path(sys.modules['lungaudit'].__file__).parent}", file=sys.stderr)
            audit = args.audit or build_audit(Path(tmp) / "audit", args.flagged)
            t0 = time.perf_counter()
            report = write_report(audit)
            print(f"wrote {report} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        m = measure(report, chromium, args.runs)
    if args.json:
        print(json.dumps(m, indent=2))
    else:
        print(f"{m['flagged']} flagged images: {m['kb_per_flagged']:.1f} KB of HTML each "
              f"({m['html_bytes'] / 1e6:.1f} MB), Chromium {m['chromium']}")
        print(table(m))
    if args.record:
        record(m, "python scripts/bench_report.py " + " ".join(argv if argv is not None else sys.argv[1:]), args.report is None and args.audit is None)
    ok = (m["kb_per_flagged"] or 0) <= TARGET_KB and max(m["load_s"]) < TARGET_S and max(m["filter_s"]) < TARGET_S
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
