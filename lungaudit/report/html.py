"""The human-readable bias report: one self-contained HTML file per audit directory.

Everything is inline (CSS, JS, images as base64 data URIs) so the file can be mailed, archived as a
CI artefact or opened offline, and so it never phones home: the report references no URL at all.
All text taken from the audit files goes through ``html.escape``.
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

from lungaudit.report.auditdir import AuditDir, AuditRow, load_audit_dir
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


def gallery_order(rows: list[AuditRow]) -> list[AuditRow]:
    """Flagged rows, worst first: highest tolerant E_out first, unknown E_out after, no-evidence last."""

    def key(r: AuditRow) -> tuple[int, int, float]:
        nan = _missing(r.e_out_tol)
        return (int(r.no_evidence), int(nan), 0.0 if nan else -r.e_out_tol)

    return sorted((r for r in rows if r.flagged), key=key)


def _card(a: AuditDir, r: AuditRow, rank: int) -> str:
    uri = None
    if r.overlay:
        uri = data_uri(a.resolve(r.overlay))
        if uri is None:
            log.warning("%s: overlay %s is missing", a.path, r.overlay)
    missing = "overlays were not written by this audit" if not r.overlay else f"overlay missing: {r.overlay}"
    name = Path(r.path or r.key).name
    wrong = r.label is not None and r.label != r.pred
    reasons = "".join(f'<span class="badge {esc(x)}">{esc(_REASON_TEXT.get(x, x))}</span>' for x in r.reasons)
    masked = ""
    if r.pred_masked:
        masked = f"{esc(r.pred_masked)} ({fmt_num(r.prob_masked, 2)})"
    marker = DASH if r.marker_overlap is None else ("yes" if r.marker_overlap else "no")
    if r.marker_box is not None:
        marker += " <span class=\"muted\">[" + " ".join(f"{v:g}" for v in r.marker_box) + "]</span>"
    opts = '<option value="">relabel as\u2026</option>' + "".join(
        f'<option value="{esc(c)}">{esc(c)}</option>' for c in a.class_names
    )
    group = f"d{rank}"
    return (
        f'<article class="card" data-key="{esc(r.key)}" data-class="{esc(r.pred)}" data-label="{esc(r.label)}" '
        f'data-region="{esc(r.region)}" data-reasons="{esc(" ".join(r.reasons))}">'
        f"{_img(uri, f'Grad-CAM overlay of {name}', missing)}"
        f'<div class="body"><div class="title" title="{esc(r.key)}"><span class="rank">#{rank}</span> {esc(name)}</div>'
        "<dl>"
        f"<dt>predicted</dt><dd class=\"{'wrong' if wrong else ''}\">{esc(r.pred)} ({fmt_num(r.prob_pred, 2)})</dd>"
        f"<dt>true</dt><dd>{esc(r.label or DASH)}</dd>"
        f"<dt>masked pred</dt><dd>{masked or DASH}</dd>"
        f"<dt>E_in</dt><dd>{fmt_num(r.e_in, 2)} strict / {fmt_num(r.e_in_tol, 2)} tolerant</dd>"
        f"<dt>E_out (tol.)</dt><dd>{fmt_num(r.e_out_tol, 2)}</dd>"
        f"<dt>region</dt><dd>{esc(r.region or DASH)}</dd>"
        f"<dt>on marker</dt><dd>{marker}</dd>"
        f"<dt>source</dt><dd>{esc(r.source or DASH)}</dd>"
        f"<dt>reasons</dt><dd>{reasons or DASH}</dd>"
        "</dl>"
        '<fieldset class="decision"><legend>review</legend>'
        f'<label><input type="radio" name="{group}" value="keep"> keep</label>'
        f'<label><input type="radio" name="{group}" value="exclude"> exclude</label>'
        f'<label><input type="radio" name="{group}" value="relabel"> relabel</label>'
        f'<select class="relabel" aria-label="new class">{opts}</select>'
        "</fieldset></div></article>"
    )


def _select(id_: str, label: str, values: list[tuple[str, str]]) -> str:
    opts = '<option value="*">all</option>' + "".join(f'<option value="{esc(v)}">{esc(t)}</option>' for v, t in values)
    return f'<label for="{id_}">{esc(label)}<select id="{id_}">{opts}</select></label>'


def _gallery(a: AuditDir) -> str:
    rows = gallery_order(a.rows)
    classes = [c for c in a.class_names if any(r.pred == c for r in rows)]
    classes += sorted({r.pred for r in rows} - set(classes))
    regions = sorted({r.region for r in rows if r.region})
    region_opts = [(x, x) for x in regions] + ([("", "(none)")] if any(not r.region for r in rows) else [])
    reasons = sorted({x for r in rows for x in r.reasons})
    filters = (
        '<div class="filters">'
        + _select("filter-class", "predicted class", [(c, c) for c in classes])
        + _select("filter-region", "region", region_opts)
        + _select("filter-reason", "reason", [(x, _REASON_TEXT.get(x, x)) for x in reasons])
        + f'<span><b id="visible-count">{len(rows)}</b> of {len(rows)} shown \u00b7 <b id="reviewed-count">0</b> reviewed</span>'
        '<button id="download" type="button">Download decisions.csv</button>'
        '<button id="clear-decisions" class="secondary" type="button">Clear decisions</button>'
        "</div>"
    )
    cards = "".join(_card(a, r, i + 1) for i, r in enumerate(rows))
    empty = "" if rows else '<p class="muted">No image was flagged.</p>'
    return (
        '<section id="gallery"><h2>Flagged images</h2>'
        '<p class="muted">Worst first (highest tolerant out-of-lung energy); no-evidence images last. '
        "Review decisions are kept in this browser and exported as decisions.csv for "
        "<span class=\"mono\">lungaudit apply-review</span>. Undecided images stay in the data set.</p>"
        f'{filters}{empty}<div class="gallery">{cards}</div></section>'
    )


def render_report(a: AuditDir) -> str:
    """The full HTML document for a loaded audit directory."""
    s = a.summary.model_dump()
    meta = {
        "class_names": a.class_names,
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
        + _gallery(a)
        + "</main>"
        f'<script id="report-meta" type="application/json">{meta_json}</script>'
        f"<script>{_asset('report.js')}</script></body></html>\n"
    )


def write_report(audit_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render ``audit_dir/report.html`` (or ``out``) from a validated audit directory; returns its path."""
    a = load_audit_dir(audit_dir)
    path = Path(out) if out is not None else a.path / REPORT_FILE
    atomic_write_text(path, render_report(a))
    log.info("wrote %s (%d flagged images)", path, len(a.flagged))
    return path
