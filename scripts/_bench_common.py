"""Shared by the benchmark scripts: replace one ``## Title`` section of BENCHMARKS.md in place."""

from __future__ import annotations

import re
from pathlib import Path


def write_benchmark_section(path: Path, title: str, body: str) -> None:
    """Replace (or append) the section headed ``## {title}``, keeping every other section."""
    text = path.read_text() if path.is_file() else "# lungaudit benchmarks\n"
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _m: section + "\n", text, count=1) if pattern.search(text) else text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n")
