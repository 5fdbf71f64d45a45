"""Benchmark ``lungaudit synth``: 2,000 phantoms at 256 px, results recorded in BENCHMARKS.md.

Usage: ``python scripts/bench_synth.py [--n-per-class 500] [--size 256] [--workers 0] [--no-write]``.
The section ``## Synthetic data generation`` of BENCHMARKS.md is replaced (or appended) with the
table of results; other sections are left as they are.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import tempfile
import time
from pathlib import Path

from lungaudit.config import SynthConfig
from lungaudit.data.synth import generate

SECTION = "## Synthetic data generation"
ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_section(path: Path, body: str) -> None:
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    block = f"{SECTION}\n\n{body.rstrip()}\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: block + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + block
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-per-class", type=int, default=500)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()

    cfg = SynthConfig(n_per_class=args.n_per_class, size=args.size, workers=args.workers, seed=0)
    n = 4 * cfg.n_per_class
    workers = cfg.workers or os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_synth_") as tmp:
        t0 = time.perf_counter()
        generate(Path(tmp), cfg)
        elapsed = time.perf_counter() - t0
        files = sum(1 for p in Path(tmp).rglob("*") if p.is_file())
        mb = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 1e6
    rate = n / elapsed
    print(f"{n} images ({files} files, {mb:.1f} MB) at {cfg.size} px with {workers} worker(s): "
          f"{elapsed:.1f} s, {rate:.1f} images/s")
    if args.no_write:
        return
    body = "\n".join(
        [
            "`python scripts/bench_synth.py` generates the default benchmark shape (4 classes x "
            f"{cfg.n_per_class} = {n} images at {cfg.size} px, markers on, images + masks + test twins "
            "+ metadata.xlsx + manifest) into a temporary folder. Requirement: under 60 s on a 2-core machine. "
            "Per image on one core: about 20 ms rendering, 1 ms PNG encoding, the rest file writes (atomic, "
            "fsynced). The load average is the machine's 1-minute load when the run started; on a shared "
            "machine the time grows with it.",
            "",
            "| date | machine | cores (workers) | load | images | size | time (s) | images/s |",
            "|---|---|---|---|---|---|---|---|",
            f"| {datetime.date.today().isoformat()} | {cpu_name()} | {os.cpu_count()} ({workers}) | {load_before:.1f} | "
            f"{n} | {cfg.size} px | {elapsed:.1f} | {rate:.1f} |",
        ]
    )
    write_section(ROOT / "BENCHMARKS.md", body)
    print(f"recorded in {ROOT / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
