"""``features.html``: the feature-space views of one run on one page, self-contained like the audit report.

Images are inlined as base64 data URIs and no URL is referenced, so the page can be mailed or
archived alone; every string from the data (paths, class and source names) goes through
``html.escape``. An audit report can link the page when it sits in the audit folder
(``lungaudit features --out <audit>/features``).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from lungaudit.utils import atomic_write_text

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#1d2433;padding:0 16px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #dde;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #dde;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}img{max-width:100%;border:1px solid #eee;margin:6px 0}
.note{color:#555;font-size:13px}.key{background:#f5f7ff;padding:8px 12px;border-left:3px solid #4a6cf7}
"""


def _esc(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _img(folder: Path, name: str, alt: str) -> str:
    path = folder / name
    if not path.is_file():
        return f"<p class=note>({_esc(name)} not written)</p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _num(v: Any) -> str:
    return "\u2014" if v is None else f"{float(v):.3f}"


def _probe_table(probe: dict[str, Any]) -> str:
    full, masked = probe["full"], probe["masked"]
    if not full.get("available"):
        return f"<p class=note>Not run: {_esc(full.get('reason'))}.</p>"
    rows = [("accuracy (cross-validated)", "accuracy"), ("balanced accuracy", "balanced_accuracy"), ("chance (majority source)", "chance"),
            ("balanced chance (1 / sources)", "balanced_chance"), ("accuracy above chance", "lift")]  # fmt: skip
    body = "".join(f"<tr><td>{_esc(label)}</td><td>{_num(full.get(k))}</td><td>{_num(masked.get(k))}</td></tr>" for label, k in rows)
    meta = f"{full['n_samples']} images, {full['n_splits']}-fold stratified, sources: {', '.join(map(str, full['sources']))}"
    return f"<table><tr><th></th><th>full image</th><th>lung-masked</th></tr>{body}</table><p class=note>{_esc(meta)}</p>"


def _counts(title: str, counts: dict[str, int]) -> str:
    cells = "".join(f"<tr><td>{_esc(k)}</td><td>{int(v)}</td></tr>" for k, v in counts.items())
    return f"<table><tr><th>{_esc(title)}</th><th>images</th></tr>{cells}</table>"


def write_features_html(path: Path, doc: dict[str, Any]) -> Path:
    """Write the page for a ``features.json`` document whose figures sit beside ``path``."""
    folder = path.parent
    parts = [
        f"<h1>Feature space of {_esc(Path(doc['run']).name)}</h1>",
        f"<p class=note>Run {_esc(doc['run'])}; {doc['n_images']} images; {doc['feature_dim']}-dimensional features of "
        f"<code>{_esc(doc['layer'])}</code>; masked input: lung mask dilated by {doc['masking']['dilate_px']} px, "
        f"outside filled with {doc['masking']['fill_value']} (as in training).</p>",
        "<h2>Source-leakage probe</h2>",
        "<p>Can a linear classifier tell where an image came from, from the features the classifier uses? "
        "A high figure on full images that drops on lung-masked ones means the model encodes the source from outside the lungs.</p>",
        f"<p class=key>{_esc(doc['interpretation'])}</p>",
        _probe_table(doc["leakage_probe"]),
        _counts("class", doc["classes"]) + _counts("source", doc["sources"]),
    ]
    for method in doc["embeddings"]:
        parts += [f"<h2>2-D embedding: {_esc(method)}</h2>", _img(folder, f"embedding_{method}.png", f"{method} embedding")]
    parts += ["<h2>Most and least activating images per class</h2>", _img(folder, "activations.png", "activations"),
              "<h2>First-layer filters</h2>", _img(folder, "filters.png", "filters")]  # fmt: skip
    if doc["problems"]:
        items = "".join(f"<li>{_esc(p['path'])}: {_esc(p['reason'])}</li>" for p in doc["problems"])
        parts += [f"<h2>Problem files ({len(doc['problems'])})</h2><ul>{items}</ul>"]
    head = f"<head><meta charset=utf-8><title>lungaudit features</title><style>{STYLE}</style></head>"
    page = f"<!doctype html><html lang=en>{head}<body>{''.join(parts)}</body></html>\n"
    atomic_write_text(path, page)
    return path


__all__ = ["write_features_html"]
