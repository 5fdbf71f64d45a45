"""The human-readable bias report: one self-contained HTML file per audit directory.

Everything the report needs is inline (CSS, JS, heatmaps and gallery thumbnails as base64 data URIs),
so the file can be mailed, archived as a CI artefact or opened offline, and it never phones home: the
only references are relative links from each thumbnail to its full-size overlay in the audit folder.
The flagged-image gallery is a JSON data block (see :mod:`lungaudit.report.gallery`) that
``report.js`` renders a page at a time, so the report stays small and fast at thousands of flagged
images. Text taken from the audit files goes through ``html.escape`` in HTML, through
:func:`script_json` in the data blocks, and through ``textContent`` in the JavaScript.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from lungaudit.report.auditdir import AuditDir, load_audit_dir
from lungaudit.report.gallery import gallery_order, gallery_records
from lungaudit.utils import atomic_write_text

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp"}
_REASON_TEXT = {
    "out_of_lung_energy": "out-of-lung energy",
    "flip_under_masking": "flip under masking",
    "flip_without_markers": "flip without markers",
    "no_evidence": "no evidence",
}
DASH = "\u2014"
PAGE_SIZES = (24, 48, 96, 192)
PAGE_SIZE = 48  # cards per gallery page: a few screens, and cheap to render at any audit size


def esc(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt_num(v: Any, digits: int = 3) -> str:
    return DASH if _missing(v) else f"{float(v):.{digits}f}"


def fmt_pct(v: Any) -> str:
    return DASH if _missing(v) else f"{100 * float(v):.1f}%"


def _asset(name: str) -> str:
    return resources.files("lungaudit.report").joinpath(name).read_text(encoding="utf-8")


def data_uri(path: Path) -> str | None:
    """The file as a base64 data URI, or None when it is missing (the caller shows a placeholder)."""
    if not path.is_file():
        return None
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _img(uri: str | None, alt: str, missing_text: str) -> str:
    if uri is None:
        return f'<div class="placeholder">{esc(missing_text)}</div>'
    return f'<img src="{uri}" alt="{esc(alt)}" loading="lazy">'


def bar(v: Any, kind: str = "") -> str:
    """A number in [0, 1] as an inline bar plus its text."""
    if _missing(v):
        return DASH
    w = max(0.0, min(1.0, float(v))) * 100
    return f'<span class="bar {kind}"><span style="width:{w:.1f}%"></span></span>'


def _table(head: Iterable[str], rows: Iterable[Iterable[str]], cls: str = "") -> str:
    """Cells are trusted HTML: callers escape text before passing it in."""
    h = "".join(f"<th>{c}</th>" for c in head)
    body = "".join("<tr>" + "".join(rows_cell for rows_cell in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


def _td(v: str, cls: str = "") -> str:
    return f'<td class="{cls}">{v}</td>' if cls else f"<td>{v}</td>"


# ---------------------------------------------------------------------------------------------
# sections


def _header(a: AuditDir) -> str:
    s = a.summary.model_dump()
    ds, counts, ck = s["dataset"], s["counts"], s["checkpoints"]
    tiles = [
        ("images", counts["images"], ""),
        ("audited", counts["audited"], ""),
        ("flagged", counts["flagged"], "flag"),
        ("no evidence", counts["no_evidence"], ""),
        ("problems", counts["problems"], ""),
        ("flag rate", fmt_pct(s["overall"]["flag_rate"]), "flag"),
        ("mean E_in", fmt_num(s["overall"]["mean_e_in"], 2), ""),
        ("flip rate", fmt_pct(s["overall"]["flip_rate"]), ""),
        ("accuracy", fmt_pct(s["overall"]["accuracy"]), ""),
    ]
    tiles_html = "".join(
        f'<div class="tile {cls}"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>' for k, v, cls in tiles
    )

    def ck_row(name: str) -> str:
        c = ck.get(name)
        if c is None:
            return f"<tr><th>{esc(name)} checkpoint</th><td class=\"muted\">none (masks given)</td></tr>"
        return (
            f"<tr><th>{esc(name)} checkpoint</th><td><span class=\"mono\">{esc(c['path'])}</span><br>"
            f"<span class=\"mono muted\">sha256 {esc(c['sha256'])}</span></td></tr>"
        )

    kv = (
        f"<tr><th>model run</th><td class=\"mono\">{esc(s.get('run_dir') or DASH)}</td></tr>"
        + ck_row("cls")
        + ck_row("seg")
        + f"<tr><th>dataset root</th><td class=\"mono\">{esc(ds['root'])}</td></tr>"
        + f"<tr><th>layout / splits</th><td>{esc(ds['layout'])} / {esc(', '.join(ds['splits']) or DASH)}</td></tr>"
        + f"<tr><th>fingerprint</th><td class=\"mono\">{esc(ds['fingerprint'])}</td></tr>"
        + f"<tr><th>created</th><td>{esc(s['created'])} (lungaudit {esc(s['lungaudit_version'])})</td></tr>"
        + f"<tr><th>audit folder</th><td class=\"mono\">{esc(a.path)}</td></tr>"
    )
    problems = s["problems"]
    prob_html = ""
    if problems:
        items = "".join(
            f"<tr><td class=\"mono\">{esc(p['path'])}</td><td>{esc(p.get('kind', ''))}</td><td>{esc(p['reason'])}</td></tr>"
            for p in problems
        )
        prob_html = (
            f"<details><summary>{len(problems)} input problem(s) (skipped files)</summary>"
            f"<table><thead><tr><th>path</th><th>kind</th><th>reason</th></tr></thead><tbody>{items}</tbody></table></details>"
        )
    warn = "".join(f'<div class="warning">{esc(w)}</div>' for w in a.warnings)
    config = json.dumps(s["config"], indent=2, sort_keys=True, default=str)
    return (
        '<section id="summary"><h2>Summary</h2>'
        f"{warn}<div class=\"tiles\">{tiles_html}</div>"
        f'<h3>Provenance</h3><table class="kv">{kv}</table>'
        f"<details><summary>audit configuration</summary><pre>{esc(config)}</pre></details>"
        f"{prob_html}</section>"
    )


def _performance(s: dict[str, Any]) -> str:
    m = s["metrics"]
    if m is None:
        return (
            '<section id="performance"><h2>Performance</h2>'
            '<p class="muted">The audited images carry no labels, so accuracy and per-class metrics are unavailable.</p></section>'
        )
    names = s["class_names"]
    overall = _table(
        ["accuracy", "macro F1", "macro ROC-AUC"],
        [[_td(fmt_pct(m["accuracy"]), "num"), _td(fmt_num(m["macro_f1"]), "num"), _td(fmt_num(m["macro_auc"]), "num")]],
    )
    conf = m["confusion"]
    conf_rows = []
    for i, (name, row) in enumerate(zip(names, conf)):
        total = sum(row) or 1
        cells = [f"<th>{esc(name)}</th>"]
        for j, v in enumerate(row):
            alpha = 0.08 + 0.6 * v / total if v else 0
            style = f' style="background:rgba(37,99,235,{alpha:.2f})"' if v else ""
            cells.append(f'<td class="{"diag" if i == j else ""}"{style}>{v}</td>')
        conf_rows.append(cells)
    confusion = _table(["true \u2193 / predicted \u2192"] + [esc(n) for n in names], conf_rows, "confusion")
    keys = ("sensitivity", "specificity", "ppv", "npv", "f1", "auc")
    pc_rows = [
        [f"<th>{esc(n)}</th>"] + [_td(fmt_num(m["per_class"].get(n, {}).get(k)), "num") for k in keys] for n in names
    ]
    per_class = _table(["class", "sensitivity", "specificity", "PPV", "NPV", "F1", "ROC-AUC"], pc_rows)
    return (
        '<section id="performance"><h2>Performance</h2>'
        f"{overall}<div class=\"grid2\"><div><h3>Confusion matrix</h3>{confusion}</div>"
        f"<div><h3>Per class</h3>{per_class}</div></div></section>"
    )


def _group_table(groups: dict[str, dict[str, Any]], label: str) -> str:
    if not groups:
        return '<p class="muted">none</p>'
    rows = []
    for name, g in groups.items():
        rows.append(
            [
                f"<th>{esc(name)}</th>",
                _td(esc(g.get("n", DASH)), "num"),
                _td(f"{bar(g['flag_rate'], 'bad')}{fmt_pct(g['flag_rate'])}", "barcell"),
                _td(f"{bar(g['mean_e_in'])}{fmt_num(g['mean_e_in'], 2)}", "barcell"),
                _td(f"{bar(g['flip_rate'], 'warn')}{fmt_pct(g['flip_rate'])}", "barcell"),
                _td(f"{bar(g['accuracy'])}{fmt_pct(g['accuracy'])}", "barcell"),
            ]
        )
    return _table([esc(label), "n", "flag rate", "mean E_in", "flip rate", "accuracy"], rows)


def histogram_svg(bins: list[float], counts: list[int], width: int = 560, height: int = 170) -> str:
    """E_in histogram as inline SVG (no namespace URL needed inside HTML5)."""
    if not counts:
        return '<p class="muted">no histogram</p>'
    pad_l, pad_b, pad_t = 34, 22, 8
    plot_w, plot_h = width - pad_l - 18, height - pad_b - pad_t
    top = max(counts) or 1
    bw = plot_w / len(counts)
    parts = [f'<svg class="hist" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="E_in histogram">']
    for i, c in enumerate(counts):
        h = plot_h * c / top
        x = pad_l + i * bw
        lo, hi = bins[i], bins[i + 1]
        parts.append(
            f'<rect class="b" x="{x + 1:.1f}" y="{pad_t + plot_h - h:.1f}" width="{max(bw - 2, 1):.1f}" height="{h:.1f}">'
            f"<title>E_in {lo:.2f}\u2013{hi:.2f}: {c}</title></rect>"
        )
    base_y = pad_t + plot_h
    parts.append(f'<line x1="{pad_l}" y1="{base_y}" x2="{pad_l + plot_w}" y2="{base_y}"/>')
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = pad_l + frac * plot_w
        v = bins[0] + frac * (bins[-1] - bins[0])
        parts.append(f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle">{v:.2f}</text>')
    parts.append(f'<text x="{pad_l - 4}" y="{pad_t + 8}" text-anchor="end">{top}</text>')
    parts.append(f'<text x="{pad_l - 4}" y="{base_y}" text-anchor="end">0</text>')
    parts.append("</svg>")
    return "".join(parts)


def _count_table(counts: dict[str, int], label: str, total: int, pretty: dict[str, str] | None = None) -> str:
    if not counts:
        return '<p class="muted">none</p>'
    top = max(counts.values()) or 1
    rows = [
        [
            f"<th>{esc((pretty or {}).get(k, k))}</th>",
            _td(str(v), "num"),
            _td(f"{bar(v / top, 'bad')}{fmt_pct(v / total) if total else DASH}", "barcell"),
        ]
        for k, v in sorted(counts.items(), key=lambda kv: -kv[1])
    ]
    return _table([esc(label), "images", "share of flagged"], rows)


def _bias(a: AuditDir) -> str:
    s = a.summary.model_dump()
    labeled = s["metrics"] is not None
    heat = []
    for name in s["class_names"]:
        rel = s["mean_outside_images"].get(name)
        uri = None
        if rel:
            uri = data_uri(a.resolve(rel))
            if uri is None:
                log.warning("%s: mean out-of-lung image %s is missing", a.path, rel)
        missing = "no image" if not rel else f"missing: {rel}"
        heat.append(f"<figure>{_img(uri, f'mean out-of-lung heatmap, predicted {name}', missing)}<figcaption>{esc(name)}</figcaption></figure>")
    flagged = s["counts"]["flagged"]
    return (
        '<section id="bias"><h2>Bias</h2>'
        '<p class="muted">E_in is the share of Grad-CAM energy inside the lung mask. A flag means the tolerant '
        "out-of-lung energy crossed the threshold, or the prediction changed when the detected burned-in markers were "
        "painted over, or (for models trained with masking) when everything outside the lungs was masked.</p>"
        f"<h3>Per {'true' if labeled else 'predicted'} class</h3>{_group_table(s['per_class'], 'class')}"
        + (f"<h3>Per predicted class</h3>{_group_table(s['per_predicted_class'], 'predicted')}" if labeled else "")
        + f"<h3>Per source</h3>{_group_table(s['per_source'], 'source')}"
        '<div class="grid2"><div><h3>E_in distribution</h3>'
        f"{histogram_svg(s['e_in_histogram']['bins'], s['e_in_histogram']['counts'])}</div>"
        f"<div><h3>Flag reasons</h3>{_count_table(s['reasons'], 'reason', flagged, _REASON_TEXT)}"
        f"<h3>Hotspot regions</h3>{_count_table(s['regions'], 'region', flagged)}</div></div>"
        "<h3>Mean out-of-lung heatmap per predicted class</h3>"
        '<p class="muted">Left: the mean out-of-lung heatmap of the images predicted as that class. Right: its excess over the mean of all classes, on its own colour scale, where anatomy shared by all classes cancels. A bright corner or band there is a shortcut shared by many images of that class (e.g. a text marker).</p>'
        f'<div class="heatmaps">{"".join(heat)}</div></section>'
    )


def _select(id_: str, label: str, values: list[tuple[str, str]]) -> str:
    opts = '<option value="*">all</option>' + "".join(f'<option value="{esc(v)}">{esc(t)}</option>' for v, t in values)
    return f'<label for="{id_}">{esc(label)}<select id="{id_}">{opts}</select></label>'


def _filters(records: list[dict[str, Any]], class_names: list[str]) -> str:
    """Filter bar; the options list what the records carry, so every choice shows at least one card."""
    preds = {r["pred"] for r in records}
    classes = [c for c in class_names if c in preds] + sorted(preds - set(class_names))
    regions = sorted({r["region"] for r in records if r["region"]})
    region_opts = [(x, x) for x in regions] + ([("", "(none)")] if any(not r["region"] for r in records) else [])
    reasons = sorted({x for r in records for x in r["reasons"]})
    n = len(records)
    return (
        '<div class="filters">'
        + _select("filter-class", "predicted class", [(c, c) for c in classes])
        + _select("filter-region", "region", region_opts)
        + _select("filter-reason", "reason", [(x, _REASON_TEXT.get(x, x)) for x in reasons])
        + f'<span><b id="visible-count">{n}</b> of {n} match \u00b7 <b id="reviewed-count">0</b> reviewed</span>'
        '<button id="download" type="button">Download decisions.csv</button>'
        '<button id="clear-decisions" class="secondary" type="button">Clear decisions</button>'
        "</div>"
    )


def _pager(where: str) -> str:
    """Paging controls; report.js fills in the numbers (two copies: above and below the cards)."""
    size = ""
    if where == "top":
        opts = "".join(f'<option value="{n}"{" selected" if n == PAGE_SIZE else ""}>{n}</option>' for n in PAGE_SIZES)
        size = f'<label>per page<select id="page-size">{opts}</select></label>'
    return (
        f'<div class="pager" id="pager-{where}">'
        '<button type="button" class="secondary" data-go="first" aria-label="first page">\u00ab</button>'
        '<button type="button" class="secondary" data-go="prev" aria-label="previous page">\u2039 prev</button>'
        '<label>page <input type="number" class="page-input" min="1" value="1" aria-label="page number"></label>'
        '<span>of <b class="page-count">1</b></span>'
        '<button type="button" class="secondary" data-go="next" aria-label="next page">next \u203a</button>'
        '<button type="button" class="secondary" data-go="last" aria-label="last page">\u00bb</button>'
        f'<span class="page-range muted"></span>{size}</div>'
    )


def _gallery(records: list[dict[str, Any]], class_names: list[str]) -> str:
    empty = "" if records else '<p class="muted">No image was flagged.</p>'
    return (
        '<section id="gallery"><h2>Flagged images</h2>'
        '<p class="muted">Worst first (highest tolerant out-of-lung energy); no-evidence images last. '
        "Click a thumbnail for the full-size overlay (the <span class=\"mono\">overlays/</span> folder beside this "
        "report). Review decisions are kept in this browser, on every page, and exported as decisions.csv for "
        "<span class=\"mono\">lungaudit apply-review</span>. Undecided images stay in the data set.</p>"
        f"{_filters(records, class_names)}{empty}"
        '<noscript><p class="warning">The gallery and its review controls need JavaScript.</p></noscript>'
        f'{_pager("top")}<div class="gallery" id="gallery-cards" aria-live="polite"></div>{_pager("bottom")}</section>'
    )


def script_json(data: Any) -> str:
    """JSON for a ``<script type="application/json">`` element.

    Every ``<`` becomes ``\\u003c``, which JSON.parse reads back unchanged: a data string can then
    neither close the element (``</script>``) nor open an HTML comment (``<!--``), which in script
    content makes the parser swallow the next ``</script>`` and with it the report's JavaScript.
    """
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def _gallery_scripts(records: list[dict[str, Any]]) -> str:
    """The gallery's data blocks around report.js, ordered so the first page shows early.

    Thumbnails are almost all of the file (about 6 KB each against 0.3 KB of numbers). The records and
    the first page's thumbnails come before report.js, which draws that page as soon as the parser
    reaches it; the other thumbnails follow it and reach the page at DOMContentLoaded. So the first page
    does not wait for the parser to get through megabytes of thumbnails it does not show.
    """
    thumbs = [r["thumb"] for r in records]
    rows = [{k: v for k, v in r.items() if k != "thumb"} for r in records]
    return (
        f'<script id="gallery-data" type="application/json">{script_json(rows)}</script>'
        f'<script id="gallery-thumbs-first" type="application/json">{script_json(thumbs[:PAGE_SIZE])}</script>'
        f"<script>{_asset('report.js')}</script>"
        f'<script id="gallery-thumbs-rest" type="application/json">{script_json(thumbs[PAGE_SIZE:])}</script>'
    )


def render_report(a: AuditDir, report_dir: Path | None = None) -> str:
    """The full HTML document for a loaded audit directory; gallery links are relative to
    ``report_dir`` (default: the audit directory)."""
    s = a.summary.model_dump()
    records = gallery_records(a, report_dir)
    meta = {
        "class_names": a.class_names,
        "reason_text": _REASON_TEXT,
        # Same audit -> same key, so decisions survive reopening the report but never leak between audits.
        "storage_key": f"lungaudit-review:{s['dataset']['fingerprint']}:{s['created']}",
    }
    # Every "<" as \u003c: "</script>" would end the element and "<!--<script>" (a class name) would
    # put the HTML parser in script-data-escaped state and swallow the report's JavaScript.
    meta_json = json.dumps(meta).replace("<", "\\u003c")
    title = f"lungaudit report \u2014 {s['dataset']['root']}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_asset('report.css')}</style></head><body>"
        '<header class="top"><h1>lungaudit bias report</h1>'
        f'<div class="sub">{esc(s["dataset"]["root"])} \u00b7 {esc(s["created"])} \u00b7 '
        f"{s['counts']['flagged']} of {s['counts']['audited']} audited images flagged</div></header>"
        '<nav><a href="#summary">Summary</a><a href="#performance">Performance</a>'
        '<a href="#bias">Bias</a><a href="#gallery">Flagged images</a></nav><main>'
        + _header(a)
        + _performance(s)
        + _bias(a)
        + _gallery(records, a.class_names)
        + "</main>"
        f'<script id="report-meta" type="application/json">{meta_json}</script>'
        + _gallery_scripts(records)
        + "</body></html>\n"
    )



def write_report(audit_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render ``audit_dir/report.html`` (or ``out``) from a validated audit directory; returns its path."""
    a = load_audit_dir(audit_dir)
    path = Path(out) if out is not None else a.path / REPORT_FILE
    atomic_write_text(path, render_report(a, path.parent))
    log.info("wrote %s (%d flagged images)", path, len(a.flagged))
    return path


__all__ = ["REPORT_FILE", "esc", "gallery_order", "histogram_svg", "render_report", "script_json", "write_report"]
