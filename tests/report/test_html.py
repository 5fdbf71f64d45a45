"""The HTML report: structure, self-containment, escaping."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

from typer.testing import CliRunner

import lungaudit.cli.cmd_report  # noqa: F401  (registers the commands)
from lungaudit.cli.app import app
from lungaudit.report.auditdir import load_audit_dir
from lungaudit.report.html import gallery_order, write_report

from .conftest import edit_summary, read_rows

EXTERNAL = re.compile(r"https?://|//cdn|src=\"http|href=\"http|src=\"//|href=\"//", re.I)
CSS_URL = re.compile(r"\burl\(\s*['\"]?(?!data:)")  # CSS url(...) to anything but a data URI


class Cards(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cards: list[dict[str, str | None]] = []
        self.selects: dict[str, list[str]] = {}
        self._select: str | None = None
        self.imgs: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "article" and "card" in (a.get("class") or ""):
            self.cards.append(a)
        if tag == "select" and a.get("id"):
            self._select = a["id"]
            self.selects[a["id"]] = []
        if tag == "option" and self._select:
            self.selects[self._select].append(a.get("value") or "")
        if tag == "img":
            self.imgs.append(a.get("src") or "")

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None


def parse(path) -> tuple[str, Cards]:
    text = path.read_text(encoding="utf-8")
    p = Cards()
    p.feed(text)
    return text, p


def test_report_structure(make_audit):
    d = make_audit()
    out = write_report(d)
    assert out == d / "report.html"
    text, p = parse(out)
    flagged = [r for r in read_rows(d) if r["flagged"] == "true"]
    assert len(p.cards) == len(flagged) > 0
    assert {c["data-key"] for c in p.cards} == {r["key"] for r in flagged}
    for r in flagged:  # keys hold commas; they must appear escaped, once per card
        assert f'data-key="{html.escape(r["key"])}"' in text
    for c in p.cards:
        assert c["data-class"] and c["data-reasons"] is not None and "data-region" in c
    # filters exist and list what the cards carry
    assert {"filter-class", "filter-region", "filter-reason"} <= set(p.selects)
    assert {c["data-region"] for c in p.cards} <= set(p.selects["filter-region"])
    # images embedded: overlays + 4 mean heatmaps, all as data URIs
    assert len(p.imgs) == len(flagged) + 4
    assert all(s.startswith("data:image/png;base64,") for s in p.imgs)
    for section in ('id="summary"', 'id="performance"', 'id="bias"', 'id="gallery"', "Confusion matrix",
                    "<svg", "Download decisions.csv", 'value="relabel"', 'value="exclude"', 'value="keep"'):
        assert section in text
    assert "Blob" in text and "decisions.csv" in text


def test_no_external_urls(make_audit):
    text, _ = parse(write_report(make_audit()))
    assert not EXTERNAL.search(text), EXTERNAL.search(text)
    assert not CSS_URL.search(text), CSS_URL.search(text)
    assert "<link" not in text and "@import" not in text and "<script src" not in text


def test_text_is_escaped(make_audit):
    d = make_audit()
    edit_summary(d, lambda s: s["dataset"].__setitem__("root", "/data/<script>alert(1)</script>"))
    text, _ = parse(write_report(d))
    assert "<script>alert(1)" not in text
    assert "&lt;script&gt;alert(1)" in text
    assert "truncated PNG &lt;b&gt;" in text  # problem reasons too


def test_gallery_order_worst_first_no_evidence_last(make_audit):
    a = load_audit_dir(make_audit())
    order = gallery_order(a.rows)
    assert order[-1].no_evidence
    e = [r.e_out_tol for r in order if not r.no_evidence]
    assert e == sorted(e, reverse=True)
    text, p = parse(write_report(a.path))
    assert [c["data-key"] for c in p.cards] == [r.key for r in order]


def test_unlabeled_audit_renders(make_audit):
    d = make_audit(labeled=False)
    text, p = parse(write_report(d))
    assert "carry no labels" in text
    assert len(p.cards) == load_audit_dir(d).summary.counts.flagged


def test_missing_overlay_is_a_placeholder_not_a_crash(make_audit):
    d = make_audit()
    victim = sorted((d / "overlays").glob("*.png"))[0]
    victim.unlink()
    text, p = parse(write_report(d))
    assert f"overlay missing: overlays/{victim.name}" in text
    assert len(p.cards) == load_audit_dir(d).summary.counts.flagged


def test_report_command(make_audit):
    d = make_audit()
    res = CliRunner().invoke(app, ["report", str(d)])
    assert res.exit_code == 0, res.output
    assert res.output.strip().endswith("report.html")
    assert (d / "report.html").is_file()


def test_report_command_bad_dir(tmp_path):
    res = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2
    assert "summary.json" in res.output
