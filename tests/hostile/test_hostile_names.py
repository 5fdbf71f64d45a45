"""Hostile class labels, sources, folder and file names, end to end through the CLI.

Issue 12, points 1 (a label ``x/../../../../../ESCAPED`` wrote a file outside the audit folder),
4 (apply-review), 6 (rich markup in user strings) and 8 (``<!--<script>`` in a label disabled the
report's JavaScript).
"""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
from pathlib import Path

import pytest

from hostile.hostile_kit import ESCAPE, HOSTILE_CLASSES, HOSTILE_DIR, HOSTILE_SOURCE, flat, invoke, names, relink, tree

SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def test_every_audit_output_stays_in_its_folder(hostile_audit):
    a = hostile_audit
    assert a.new_files, "the audit wrote nothing"
    outside = sorted(str(p) for p in a.new_files if a.audit_dir not in p.parents)
    assert not outside, f"written outside {a.audit_dir}: {outside}"
    assert not [p for p in tree(a.base) if "ESCAPED" in p.name and a.audit_dir not in p.parents]
    summary = json.loads((a.audit_dir / "summary.json").read_text())
    # each predicted class got its mean heatmap, under a name that is only a name
    assert summary["mean_outside_images"] and set(summary["mean_outside_images"]) <= set(HOSTILE_CLASSES)
    for fname in summary["mean_outside_images"].values():
        assert re.fullmatch(r"mean_outside_\d\d_[A-Za-z0-9_-]+\.png", fname) and (a.audit_dir / fname).is_file()
    overlays = list((a.audit_dir / "overlays").iterdir())
    assert len(overlays) == summary["counts"]["flagged"] > 0
    assert all(SAFE.match(p.stem) and p.suffix == ".png" for p in overlays)
    assert all(SAFE.match(p.stem) for p in (a.audit_dir / "thumbs").iterdir())


def test_mean_heatmap_names_of_every_hostile_class(tmp_path):
    import numpy as np

    from lungaudit.audit.aggregate import write_mean_outside

    out = tmp_path / "deep" / "er" / "audit"
    names_ = [*HOSTILE_CLASSES, "..", ".", "", "\x00", "C:\\x", "CON"]
    written = write_mean_outside(out, names_, np.ones((len(names_), 8, 8)), np.ones(len(names_)))
    assert set(written) == set(names_) and len(set(written.values())) == len(names_)  # indexed: never collide
    assert tree(tmp_path) == {out / f for f in written.values()}
    assert all(SAFE.match(Path(f).stem) for f in written.values())


def test_hostile_strings_print_as_themselves(hostile_audit):
    out = hostile_audit.result.output
    # the per-class and per-source tables show labels and sources literally: no markup parsed, none swallowed
    assert all(c in out for c in HOSTILE_CLASSES), out
    assert HOSTILE_SOURCE in out


def test_report_keeps_its_script_and_escapes_every_name(hostile_audit):
    a = hostile_audit
    invoke("report", a.audit_dir, code=0)
    text = (a.audit_dir / "report.html").read_text(encoding="utf-8")
    meta = re.search(r'<script id="report-meta" type="application/json">(.*?)</script>', text, re.S)
    assert meta, "the inline JSON block is gone"
    assert "<" not in meta.group(1), "a raw '<' in inline JSON can end or comment out the script element"
    assert json.loads(meta.group(1))["class_names"] == HOSTILE_CLASSES
    # the JavaScript that follows is still its own <script> element
    assert re.search(r"</script><script>[^<]*JSON\.parse", text)
    # outside the scripts, hostile names appear only HTML-escaped
    body = re.sub(r"<script.*?</script>", "", text, flags=re.S)
    assert "<!--<script>" not in body and "onerror=alert" not in body.replace("onerror=alert(1)&gt;", "")
    assert html.escape(HOSTILE_CLASSES[1], quote=True) in body


def test_gate_and_compare_take_hostile_class_names(hostile_audit, tmp_path):
    d = hostile_audit.audit_dir
    res = invoke("gate", d, "--class-max-flag-rate", f"{HOSTILE_CLASSES[1]}=1.0", "--max-flag-rate", "1.0",
                 "--junit", tmp_path / "gate.xml", code=0)  # fmt: skip
    assert "[/x]" in res.output and "PASSED" in res.output
    res = invoke("gate", d, "--class-max-flag-rate", f"{HOSTILE_CLASSES[2]}=0.0", "--junit", tmp_path / "g2.xml", code=1)
    assert "[bold red]" in res.output and "FAILED" in res.output  # the class name, not a style
    import xml.etree.ElementTree as ET

    ET.parse(tmp_path / "gate.xml")  # the JUnit file stays well-formed
    res = invoke("compare", d, d, "--out", tmp_path / "compare.json", code=0)
    assert "no regression" in res.output


def _report_keys(audit_dir: Path) -> list[str]:
    """The key of every gallery record of the report, as the browser exports them into decisions.csv."""
    text = (audit_dir / "report.html").read_text(encoding="utf-8")
    block = re.search(r'<script id="gallery-data" type="application/json">(.*?)</script>', text, re.S)
    assert block, "the report has no gallery data block"
    return [r["key"] for r in json.loads(block.group(1))]


def _decisions(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["key", "decision", "new_label"])
        w.writerows(rows)
    return path


def _manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def review_case(hostile_audit, hostile_data, tmp_path):
    """A copy of the hostile data set and decisions keyed exactly as the report exports them."""
    invoke("report", hostile_audit.audit_dir, code=0)
    keys = _report_keys(hostile_audit.audit_dir)
    assert keys and all(not Path(k).is_absolute() for k in keys), keys  # relative to the data set root
    data = tmp_path / "copy" / HOSTILE_DIR
    shutil.copytree(hostile_data, data)
    data = data.resolve()
    dec = _decisions(tmp_path / "decisions.csv", [(keys[0], "relabel", ESCAPE), (keys[1], "exclude", "")])
    return data, dec, keys


def test_apply_review_keeps_columns_and_writes_only_its_out(review_case, tmp_path):
    data, dec, keys = review_case
    original = _manifest(data / "manifest.csv")
    before = tree(tmp_path)
    out = tmp_path / "clean"
    res = invoke("apply-review", dec, data, "--out", out, code=0)
    assert names(res, out / "manifest.csv")
    assert tree(tmp_path) - before == {out / "manifest.csv", out / "review.json"}
    cleaned = _manifest(out / "manifest.csv")
    assert set(original[0]) <= set(cleaned[0]), "a column of the data set's manifest was dropped"
    assert len(cleaned) == len(original) - 1
    by_name = {Path(r["path"]).name: r for r in cleaned}
    relabelled = by_name[Path(keys[0]).name]
    assert relabelled["label"] == ESCAPE and relabelled["relabelled_from"]
    for row in original:  # every other value survives (paths now absolute)
        got = by_name.get(Path(row["path"]).name)
        if got is None or got is relabelled:
            continue
        assert got["label"] == row["label"] and got["source"] == HOSTILE_SOURCE
        assert got["shortcut"] == row["shortcut"] and got["shortcut_box"] == row["shortcut_box"]
        assert Path(got["path"]) == (data / row["path"]).resolve()


def test_apply_review_matches_a_moved_data_set(review_case, tmp_path):
    data, dec, keys = review_case
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    data.rename(moved)
    invoke("apply-review", dec, moved, "--out", tmp_path / "clean", code=0)
    cleaned = _manifest(tmp_path / "clean" / "manifest.csv")
    assert all(Path(r["path"]).parent.parent == moved.resolve() for r in cleaned)
    assert Path(keys[1]).name not in {Path(r["path"]).name for r in cleaned}  # the exclusion matched


@pytest.mark.parametrize("how", ["same", "inside", "dotdot", "symlink", "manifest-csv"])
def test_apply_review_never_writes_inside_the_data_set(review_case, tmp_path, how):
    data, dec, _ = review_case
    manifest = data / "manifest.csv"
    original = manifest.read_bytes()
    target = {
        "same": data, "inside": data / "images" / "clean", "dotdot": data / ".." / data.name,
        "symlink": relink(tmp_path / "link", data / "images"), "manifest-csv": data,
    }[how]  # fmt: skip
    source = manifest if how == "manifest-csv" else data
    before = tree(data)
    res = invoke("apply-review", dec, source, "--out", target, code=2)
    assert names(res, "inside the data set", target)
    assert manifest.read_bytes() == original and tree(data) == before


def test_inspect_with_hostile_names(hostile_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = invoke("inspect", hostile_data, code=0)
    assert "[/x]" in res.output and "<!--<script>" in res.output and "x[/y]" in flat(res.output)
    made = tree(tmp_path)
    assert len(made) == 1 and (tmp_path / "runs" / "inspect") in next(iter(made)).parents
    # a manifest whose stem is ".." must not put problems.csv above runs/inspect
    dots = tmp_path / "m" / "...csv"
    dots.parent.mkdir()
    shutil.copy(hostile_data / "manifest.csv", dots)
    dots.write_text(dots.read_text().replace("images/", f"{hostile_data}/images/").replace("masks/", f"{hostile_data}/masks/"))
    invoke("inspect", dots, code=0)
    made = tree(tmp_path / "runs")
    assert all((tmp_path / "runs" / "inspect") in p.parents for p in made) and len(made) == 2


def test_no_console_parses_user_strings_as_markup():
    """Guard for point 6: the CLI's consoles are created with markup off, every Progress uses them, and
    markup is switched on in one place only (``say``, whose values are escaped)."""
    import ast

    import lungaudit

    pkg = Path(lungaudit.__file__).parent
    for path in pkg.rglob("*.py"):
        tree_ = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree_):
            if not isinstance(node, ast.Call):
                continue
            fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            kw = {k.arg: k.value for k in node.keywords}
            where = f"{path.relative_to(pkg)}:{node.lineno}"
            if fn == "Console":
                assert isinstance(kw.get("markup"), ast.Constant) and kw["markup"].value is False, f"{where}: Console without markup=False"
            if fn == "Progress":
                assert "console" in kw, f"{where}: a Progress must print through the shared markup-free console"
            if fn == "print" and isinstance(kw.get("markup"), ast.Constant) and kw["markup"].value is True:
                assert path.name == "common.py", f"{where}: markup=True outside say()"
