"""The HTML report: structure, self-containment, escaping, thumbnails and links, size at scale."""

from __future__ import annotations

import base64
import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

import lungaudit.cli.cmd_report  # noqa: F401  (registers the commands)
from lungaudit.audit.overlay import THUMB_SIDE, thumbnail_for
from lungaudit.cli.app import app
from lungaudit.report.auditdir import load_audit_dir
from lungaudit.report.gallery import THUMB_MAX_BYTES, relative_href
from lungaudit.report.html import PAGE_SIZE, gallery_order, write_report

from .conftest import CLASSES, edit_summary, read_rows

EXTERNAL = re.compile(r"https?://|//cdn|src=\"http|href=\"http|src=\"//|href=\"//", re.I)
CSS_URL = re.compile(r"\burl\(\s*['\"]?(?!data:)")  # CSS url(...) to anything but a data URI
SCRIPT = re.compile(r"<script([^>]*)>(.*?)</script>", re.S | re.I)
KB_PER_FLAGGED = 30  # issue 10: at most 30 KB of HTML per flagged image


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.selects: dict[str, list[str]] = {}
        self._select: str | None = None
        self.imgs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
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


def parse(path: Path) -> tuple[str, Page, list[dict]]:
    """The report's text, its static elements, and the gallery records from its JSON data block."""
    text = path.read_text(encoding="utf-8")
    p = Page()
    p.feed(text)
    blocks = {m.group(1): m.group(2) for m in SCRIPT.finditer(text)}
    data = {a.split('"')[1]: json.loads(body) for a, body in blocks.items() if "application/json" in a}
    records = data["gallery-data"]
    thumbs = data["gallery-thumbs-first"] + data["gallery-thumbs-rest"]
    assert len(data["gallery-thumbs-first"]) == min(PAGE_SIZE, len(records)) and len(thumbs) == len(records)
    return text, p, [{**r, "thumb": t} for r, t in zip(records, thumbs)]


def thumb_bytes(record: dict) -> bytes:
    prefix = "data:image/jpeg;base64,"
    assert record["thumb"].startswith(prefix)
    return base64.b64decode(record["thumb"][len(prefix):])


def test_report_structure(make_audit):
    d = make_audit()
    out = write_report(d)
    assert out == d / "report.html"
    text, p, records = parse(out)
    flagged = [r for r in read_rows(d) if r["flagged"] == "true"]
    assert len(records) == len(flagged) > 0
    assert {r["key"] for r in records} == {r["key"] for r in flagged}
    by_key = {r["key"]: r for r in flagged}
    for rec in records:  # the record carries what the card shows and what the filters read
        row = by_key[rec["key"]]
        assert rec["pred"] == row["pred"] and rec["region"] == row["region"]
        assert rec["reasons"] == [x for x in row["reasons"].split(";") if x]
        assert rec["e_out_tol"] == (round(float(row["e_out_tol"]), 4) if row["e_out_tol"] else None)
    # filters exist and list what the records carry
    assert {"filter-class", "filter-region", "filter-reason", "page-size"} <= set(p.selects)
    assert {r["region"] for r in records} <= set(p.selects["filter-region"])
    assert {r["pred"] for r in records} <= set(p.selects["filter-class"])
    assert {x for r in records for x in r["reasons"]} <= set(p.selects["filter-reason"])
    # only the 4 mean heatmaps are inline <img>s; the gallery's pictures are JPEG thumbnails in the data
    assert len(p.imgs) == 4 and all(s.startswith("data:image/png;base64,") for s in p.imgs)
    assert text.count("data:image/png") == 4
    for rec in records:
        assert thumb_bytes(rec).startswith(b"\xff\xd8\xff")
    for ident in ("summary", "performance", "bias", "gallery", "gallery-cards", "pager-top", "pager-bottom",
                  "visible-count", "reviewed-count", "download", "clear-decisions"):
        assert ident in p.ids
    for piece in ("Confusion matrix", "<svg", "Download decisions.csv", "localStorage", "Blob", "decisions.csv"):
        assert piece in text


def test_full_overlays_are_linked_relatively(make_audit, tmp_path):
    d = make_audit()
    _, _, records = parse(write_report(d))
    for rec in records:
        assert not re.match(r"^[a-z]+:|^/", rec["full"]), rec["full"]  # relative, no scheme
        assert (d / unquote(rec["full"])).is_file()
    # a report written elsewhere links back into the audit folder
    out = tmp_path / "elsewhere" / "deep" / "r.html"
    _, _, records = parse(write_report(d, out))
    for rec in records:
        assert rec["full"].startswith(f"../../{d.name}/overlays/")
        target = (out.parent / unquote(rec["full"])).resolve()
        assert target.is_file() and target.parent == (d / "overlays").resolve()


def test_relative_href_encodes_every_segment(tmp_path):
    target = tmp_path / "a dir" / "overlays" / "javascript:alert(1)#x?y%.png"
    href = relative_href(target, tmp_path)
    assert href == "a%20dir/overlays/javascript%3Aalert%281%29%23x%3Fy%25.png"
    assert unquote(href) == "a dir/overlays/javascript:alert(1)#x?y%.png"


def test_no_external_urls(make_audit):
    text, _, _ = parse(write_report(make_audit(thumbs=True)))
    assert not EXTERNAL.search(text), EXTERNAL.search(text)
    assert not CSS_URL.search(text), CSS_URL.search(text)
    assert "<link" not in text and "@import" not in text and "<script src" not in text


def test_text_is_escaped(make_audit):
    d = make_audit()
    edit_summary(d, lambda s: s["dataset"].__setitem__("root", "/data/<script>alert(1)</script>"))
    text, _, _ = parse(write_report(d))
    assert "<script>alert(1)" not in text
    assert "&lt;script&gt;alert(1)" in text
    assert "truncated PNG &lt;b&gt;" in text  # problem reasons too


def test_class_label_cannot_break_the_scripts(make_audit):
    """``<!--<script>`` in script content would make the parser swallow the next ``</script>``:
    the data blocks must hold no ``<`` at all, and the label must come back intact from JSON."""
    evil = "Normal<!--<script>"
    classes = ["COVID", "Lung_Opacity", evil, "Viral Pneumonia"]
    d = make_audit(classes=classes)
    text, p, records = parse(write_report(d))
    scripts = SCRIPT.findall(text)
    names = ["report-meta", "gallery-data", "gallery-thumbs-first", None, "gallery-thumbs-rest"]
    assert [attrs for attrs, _ in scripts] == [f' id="{n}" type="application/json"' if n else "" for n in names]
    assert text.lower().count("<script") == 5 and text.lower().count("</script") == 5
    for (_, body), name in zip(scripts, names):
        if name:
            assert "<" not in body
        else:  # the JavaScript itself
            assert "<!--" not in body and "</" not in body
    meta = json.loads(scripts[0][1])
    assert meta["class_names"] == classes
    assert any(r["pred"] == evil for r in records)
    assert evil in p.selects["filter-class"]  # option values: HTML-escaped in the file, intact when parsed
    assert html.escape(evil) in text


def test_gallery_order_worst_first_no_evidence_last(make_audit):
    a = load_audit_dir(make_audit())
    order = gallery_order(a.rows)
    assert order[-1].no_evidence
    e = [r.e_out_tol for r in order if not r.no_evidence]
    assert e == sorted(e, reverse=True)
    _, _, records = parse(write_report(a.path))
    assert [r["key"] for r in records] == [r.key for r in order]


def test_unlabeled_audit_renders(make_audit):
    d = make_audit(labeled=False)
    text, _, records = parse(write_report(d))
    assert "carry no labels" in text
    assert len(records) == load_audit_dir(d).summary.counts.flagged
    assert all(r["label"] is None and r["source"] is None for r in records)


def test_audit_thumbnails_are_embedded_as_written(make_audit):
    d = make_audit(thumbs=True)
    _, _, records = parse(write_report(d))
    for rec in records:
        overlay = unquote(rec["full"])
        assert thumb_bytes(rec) == (d / thumbnail_for(overlay)).read_bytes()


def test_thumbnails_made_for_an_older_audit_folder(make_audit):
    d = make_audit()  # overlays/ only, as audits wrote them before thumbs/
    _, _, records = parse(write_report(d))
    for rec in records:
        img = cv2.imdecode(np.frombuffer(thumb_bytes(rec), np.uint8), cv2.IMREAD_COLOR)
        assert img.shape[1] == THUMB_SIDE
    assert not (d / "thumbs").exists()  # made in memory: the report never writes into the audit's files


def test_unusable_thumbnails_are_redone(make_audit):
    d = make_audit(thumbs=True)
    thumbs = sorted((d / "thumbs").glob("*.jpg"))
    thumbs[0].write_bytes(b"<svg onload=alert(1)>")  # not a JPEG
    thumbs[1].write_bytes(b"\xff\xd8\xff" + bytes(THUMB_MAX_BYTES))  # far too big for the size budget
    _, _, records = parse(write_report(d))
    by_thumb = {thumbnail_for(unquote(r["full"])): r for r in records}
    for t in thumbs[:2]:
        data = thumb_bytes(by_thumb[f"thumbs/{t.name}"])
        assert data.startswith(b"\xff\xd8\xff") and len(data) <= THUMB_MAX_BYTES
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[1] == THUMB_SIDE


def test_missing_overlay_is_a_placeholder_not_a_crash(make_audit):
    d = make_audit()
    victim = sorted((d / "overlays").glob("*.png"))[0]
    victim.unlink()
    _, _, records = parse(write_report(d))
    rec = next(r for r in records if r["missing"])
    assert rec["missing"] == f"overlay missing: overlays/{victim.name}"
    assert rec["thumb"] is None and rec["full"] is None
    assert len(records) == load_audit_dir(d).summary.counts.flagged
    # with a thumbnail left, the card keeps its picture and says the full overlay is gone
    d = make_audit(thumbs=True)
    (d / "overlays" / victim.name).unlink()
    _, _, records = parse(write_report(d))
    rec = next(r for r in records if r["missing"])
    assert rec["thumb"] is not None and rec["full"] is None


def test_report_size_per_flagged_image(big_audit):
    """Issue 10's size target, without a browser: real-size audit thumbnails, 2000 flagged images."""
    d, report = big_audit
    n = load_audit_dir(d).summary.counts.flagged
    assert n == 2000
    kb = report.stat().st_size / 1024 / n
    assert kb <= KB_PER_FLAGGED, f"{kb:.1f} KB of HTML per flagged image"
    text = report.read_text(encoding="utf-8")
    assert text.count("data:image/png") == len(CLASSES)  # overlays are linked, never inlined


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


@pytest.mark.parametrize("asset", ["report.js", "report.css"])
def test_inline_assets_cannot_end_their_element(asset):
    from importlib import resources

    text = resources.files("lungaudit.report").joinpath(asset).read_text(encoding="utf-8").lower()
    assert "</script" not in text and "</style" not in text and "<!--" not in text
