#!/usr/bin/env python
"""Drive ``lungaudit serve``'s page in headless Chromium: upload, check the result, screenshot it.

    python scripts/screenshot_serve.py --run runs/train/exp --image some_xray.png --out shots/

Starts the app for the run on a free loopback port (uvicorn in a thread), opens the page with the
system Chromium through Playwright (no ``playwright install``), uploads ``--image`` through the file
input and checks that:
  * the result appears with the predicted class, a verdict and every picture the API returned
    (the lung outline and one overlay per explanation method), each decoded by the browser;
  * "Download JSON" saves the prediction shown (``download.json``);
  * a non-image (``--bad``, default a few bytes of text) shows the server's error in the page.
Saves ``serve.png`` (the page after the upload) and prints a JSON summary.
Exit code 0 on success, 1 when a check fails, 2 when Chromium or Playwright is missing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # this checkout's lungaudit
from screenshot_report import CHROMIUM_ARGS, CheckFailed, check, find_chromium  # noqa: E402


def drive_page(url: str, chromium: str, image: Path, bad: Path, out: Path, width: int) -> dict:
    from playwright.sync_api import sync_playwright

    result: dict = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_context(accept_downloads=True, viewport={"width": width, "height": 900}).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(url)
            # A locator wait, not wait_for_function: the page's CSP (script-src 'self') forbids the eval the latter needs.
            page.locator("#model", has_text=re.compile(r"^run ")).wait_for(timeout=60_000)
            page.set_input_files("#file", str(image))
            page.wait_for_selector("#result:not([hidden])", timeout=120_000)
            result["pred"] = page.inner_text("#pred").strip()
            result["verdict"] = page.get_attribute("#verdict", "data-verdict")
            result["pictures"] = page.locator("#pictures figure").evaluate_all("fs => fs.map(f => f.dataset.name)")
            loaded = page.locator("#pictures img").evaluate_all("imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")
            check(len(loaded) >= 2 and all(loaded), f"pictures not all decoded: {loaded}")
            check(result["pictures"][:2] == ["outline", "gradcam"], f"unexpected pictures {result['pictures']}")
            check(bool(result["pred"]) and result["verdict"] in ("in-lung", "out-of-lung", "no evidence"), f"no result shown: {result}")
            shot = out / "serve.png"
            page.screenshot(path=str(shot), full_page=True)
            result["screenshot"] = str(shot)
            with page.expect_download() as dl:
                page.click("#download")
            target = out / "download.json"
            dl.value.save_as(str(target))
            saved = json.loads(target.read_text(encoding="utf-8"))
            check(saved["prediction"]["pred"] == result["pred"], "the downloaded JSON is not the prediction shown")
            result["download"] = {"file": dl.value.suggested_filename, "pred": saved["prediction"]["pred"]}
            page.set_input_files("#file", str(bad))
            page.wait_for_selector("#error:not([hidden])", timeout=60_000)
            result["error_shown"] = page.inner_text("#error").strip()
            check("not an image" in result["error_shown"], f"the error shown is {result['error_shown']!r}")
            check(not [e for e in errors if "Failed to load resource" not in e], f"JavaScript errors: {errors}")
        finally:
            browser.close()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="training run folder")
    ap.add_argument("--image", type=Path, required=True, help="radiograph to upload")
    ap.add_argument("--out", type=Path, required=True, help="folder for serve.png and download.json")
    ap.add_argument("--bad", type=Path, default=None, help="a file the server must refuse (default: a small text file)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--width", type=int, default=1280, help="browser viewport width")
    ap.add_argument("--chromium", default=None, help="Chromium binary (default: /usr/bin/chromium or on PATH)")
    args = ap.parse_args(argv)

    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("error: Chromium not found (Debian: apt-get install -y chromium)", file=sys.stderr)
        return 2
    try:
        import playwright  # noqa: F401
    except ImportError:
        print("error: playwright is not installed (pip install playwright; no `playwright install` needed)", file=sys.stderr)
        return 2
    from lungaudit.config import load_config
    from lungaudit.services.predict import Predictor
    from lungaudit.services.serve import BackgroundServer, create_app

    args.out.mkdir(parents=True, exist_ok=True)
    bad = args.bad or args.out / "not_an_image.png"
    if args.bad is None:
        bad.write_text("this is a text file, not a radiograph\n")
    cfg_path = args.run / "config.yaml"
    predictor = Predictor.load(args.run, load_config(cfg_path if cfg_path.is_file() else None), device=args.device)
    try:
        with BackgroundServer(create_app(predictor)) as srv:
            result = drive_page(srv.url + "/", chromium, args.image, bad, args.out, args.width)
    except CheckFailed as e:
        print(f"check failed: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
