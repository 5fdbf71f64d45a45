"""The review loop: decisions.csv -> cleaned manifest."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

import lungaudit.cli.cmd_report  # noqa: F401
from lungaudit.cli.app import app
from lungaudit.data.records import Dataset, Sample
from lungaudit.report.review import Decision, ReviewError, apply_decisions, parse_decisions

CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")


def samples() -> list[Sample]:
    return [
        Sample(Path("/d/a.png"), "COVID", source="s1", split="test"),
        Sample(Path("/d/b.png"), "Normal", mask_path=Path("/d/b_mask.png"), split="test"),
        Sample(Path("/d/c.png"), "Normal", patient_id="p3"),
        Sample(Path("/d/d.png"), "Viral Pneumonia"),
    ]


def test_each_decision_kind():
    ss = samples()
    out = apply_decisions(ss, [
        Decision("/d/a.png", "exclude"),
        Decision("/d/b.png", "relabel", "Lung_Opacity"),
        Decision("/d/c.png", "keep"),
    ], CLASSES)
    assert [s.key for s in out] == ["/d/b.png", "/d/c.png", "/d/d.png"]  # order kept, undecided kept
    assert out[0].label == "Lung_Opacity" and out[0].mask_path == Path("/d/b_mask.png")
    assert out[0].extra["relabelled_from"] == "Normal"
    assert out[1] == ss[2] and out[2] == ss[3]
    assert ss[1].label == "Normal"  # input untouched


def test_key_matches_by_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = [Sample(tmp_path / "x.png", "COVID")]
    assert apply_decisions(s, [Decision("x.png", "exclude")]) == []


@pytest.mark.parametrize(
    ("decisions", "match"),
    [
        ([Decision("/d/nope.png", "keep", line=4)], r"line 4 .*unknown key"),
        ([Decision("/d/a.png", "delete")], "unknown decision 'delete'"),
        ([Decision("/d/a.png", "relabel")], "relabel needs a new_label"),
        ([Decision("/d/a.png", "relabel", "Pneumothorax")], "not a class"),
        ([Decision("/d/a.png", "keep", "COVID")], "only relabel takes one"),
        ([Decision("/d/a.png", "keep"), Decision("a.png", "exclude")], None),  # different file: unknown key
    ],
)
def test_bad_decisions(decisions, match):
    with pytest.raises(ReviewError, match=match):
        apply_decisions(samples(), decisions, CLASSES)


def test_parse_decisions_names_rows():
    text = 'key,decision,new_label\n"/d/a, b.png",keep,\n/d/c.png,relabel,Normal\n'
    ds = parse_decisions(text, "dec.csv", CLASSES)
    assert ds == [Decision("/d/a, b.png", "keep", None, 2), Decision("/d/c.png", "relabel", "Normal", 3)]
    for bad, match in [
        ("key,decision,new_label\n/d/a.png,keep,\n/d/c.png,bogus,\n", r"dec.csv, line 3 .*unknown decision"),
        ("key,decision,new_label\n/d/a.png,relabel,\n", r"line 2 .*relabel needs a new_label"),
        ("key,decision,new_label\n/d/a.png,relabel,Cat\n", r"line 2 .*not a class"),
        ("key,decision,new_label\n/d/a.png,keep,\n/d/a.png,exclude,\n", r"line 3: duplicate key"),
        ("path,what\n/d/a.png,keep\n", "missing column"),
    ]:
        with pytest.raises(ReviewError, match=match):
            parse_decisions(bad, "dec.csv", CLASSES)


def test_parse_tolerates_bom_and_case(tmp_path):
    from lungaudit.report.review import read_decisions

    p = tmp_path / "d.csv"
    p.write_text("\ufeffkey,decision,new_label\n/d/a.png,EXCLUDE,\n", encoding="utf-8")
    assert read_decisions(p)[0].decision == "exclude"


# --------------------------------------------------------------------------- CLI


def tiny_manifest_dataset(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = [("a.png", "COVID"), ("b.png", "Normal"), ("c.png", "Normal"), ("d.png", "Viral Pneumonia")]
    for name, _ in rows:
        cv2.imwrite(str(root / name), rng.integers(0, 255, (32, 32), dtype=np.uint8))
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows(rows)
    return root / "labels.csv"


def write_decisions(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "decision", "new_label"])
        w.writerows(rows)
    return path


def read_manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _loader_available() -> bool:
    try:
        from lungaudit.data import load_dataset  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _loader_available(), reason="lungaudit.data.load_dataset not available yet")
def test_apply_review_cli_with_manifest_loader(tmp_path):
    from lungaudit.data import load_dataset

    manifest = tiny_manifest_dataset(tmp_path / "ds")
    keys = {Path(s.path).name: s.key for s in load_dataset(manifest).samples}
    dec = write_decisions(tmp_path / "decisions.csv", [
        (keys["a.png"], "exclude", ""), (keys["b.png"], "relabel", "Lung_Opacity"), (keys["c.png"], "keep", ""),
    ])
    out = tmp_path / "clean"
    res = CliRunner().invoke(app, ["apply-review", str(dec), str(manifest), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "excluded" in res.output and "relabelled" in res.output
    rows = read_manifest(out / "manifest.csv")
    # the known columns, then the audit trail of the relabelling
    assert list(rows[0]) == ["path", "label", "mask", "source", "patient_id", "split", "relabelled_from"]
    assert {Path(r["path"]).name: r["relabelled_from"] for r in rows} == {"b.png": "Normal", "c.png": "", "d.png": ""}
    got = {Path(r["path"]).name: r["label"] for r in rows}
    assert got == {"b.png": "Lung_Opacity", "c.png": "Normal", "d.png": "Viral Pneumonia"}
    assert all(Path(r["path"]).is_absolute() for r in rows)
    # the cleaned manifest is itself a loadable data set
    again = load_dataset(out / "manifest.csv")
    assert sorted(s.label for s in again.samples) == ["Lung_Opacity", "Normal", "Viral Pneumonia"]


@pytest.mark.skipif(not _loader_available(), reason="lungaudit.data.load_dataset not available yet")
@pytest.mark.parametrize(
    ("row", "match"),
    [
        (("{a}", "nuke", ""), "line 2 .*unknown decision"),
        (("{a}", "relabel", ""), "line 2 .*relabel needs a new_label"),
        (("{a}", "relabel", "Cat"), "line 2 .*not a class"),
        (("/elsewhere/zzz.png", "keep", ""), "line 2 .*unknown key"),
    ],
)
def test_apply_review_cli_bad_decisions(tmp_path, row, match):
    import re

    from lungaudit.data import load_dataset

    manifest = tiny_manifest_dataset(tmp_path / "ds")
    a = next(s.key for s in load_dataset(manifest).samples if Path(s.path).name == "a.png")
    dec = write_decisions(tmp_path / "decisions.csv", [(row[0].format(a=a), row[1], row[2])])
    res = CliRunner().invoke(app, ["apply-review", str(dec), str(manifest), "--out", str(tmp_path / "clean")])
    assert res.exit_code == 2
    assert re.search(match, " ".join(res.output.split()))
    assert not (tmp_path / "clean" / "manifest.csv").exists()


def test_apply_review_cli_wiring_with_fake_loader(tmp_path, monkeypatch):
    """The command's contract, independent of the real loader."""
    import lungaudit.data

    ss = samples()
    monkeypatch.setattr(lungaudit.data, "load_dataset",
                        lambda root, layout="auto", **kw: Dataset(Path("/d"), "manifest", ss, [], CLASSES), raising=False)
    dec = write_decisions(tmp_path / "d.csv", [("/d/d.png", "exclude", "")])
    res = CliRunner().invoke(app, ["apply-review", str(dec), "/d", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert [r["path"] for r in read_manifest(tmp_path / "o" / "manifest.csv")] == ["/d/a.png", "/d/b.png", "/d/c.png"]


def test_apply_review_cli_missing_dataset(tmp_path):
    dec = write_decisions(tmp_path / "d.csv", [])
    res = CliRunner().invoke(app, ["apply-review", str(dec), str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
