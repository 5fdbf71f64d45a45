from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lungaudit.config import CLASS_NAMES, DataConfig
from lungaudit.data import (
    DatasetError,
    detect_layout,
    load_dataset,
    scan_dataset,
    source_from_url,
    write_problems_csv,
)

SHENZHEN = Path(__file__).resolve().parents[2].parent / "shared/realsample/shenzhen"


# ----------------------------------------------------------------------------- covid layout


def test_good_covid_tree(covid_tree: Path) -> None:
    ds = load_dataset(covid_tree)
    assert ds.layout == "covid" and ds.class_names == CLASS_NAMES
    assert ds.problems == []
    assert len(ds.samples) == 12
    assert all(s.mask_path is not None and s.mask_path.is_file() for s in ds.samples)
    assert all(s.path.is_absolute() for s in ds.samples)
    assert {s.label for s in ds.samples} == set(CLASS_NAMES)
    assert all(s.split in ("train", "val", "test") for s in ds.samples)
    assert ds.root == covid_tree.resolve()


def test_malformed_tree_reports_every_problem(malformed_tree) -> None:
    root, expected = malformed_tree
    ds = load_dataset(root)  # nothing may raise
    by_name = {p.path.name: p for p in ds.problems}
    for name, (kind, reason) in expected.items():
        assert name in by_name, f"no problem reported for {name}: {ds.problems}"
        assert by_name[name].kind == kind, (name, by_name[name])
        assert reason in by_name[name].reason, (name, by_name[name].reason)
    kept = {s.path.name: s for s in ds.samples}
    # bad images are dropped; images with a bad or missing mask are kept without a mask
    for bad in ("zero.png", "truncated.png", "text.png", "corrupt.dcm", "x.png"):
        assert bad not in kept
    for name in ("nomask.png", "wrongshape.png", "nonbinary.png"):
        assert kept[name].mask_path is None
    assert len(ds.samples) == 12 + 3
    assert len(ds.problems) == len(expected)


def test_wrong_size_masks_resized_not_reported(tmp_path: Path, h) -> None:
    root = tmp_path / "db"
    h.write_image(root / "COVID" / "images" / "COVID-1.png", h.gradient(299, 299))
    h.write_image(root / "COVID" / "masks" / "COVID-1.png", h.lung_mask(256, 256))
    ds, stats = scan_dataset(root)
    assert ds.problems == [] and ds.samples[0].mask_path is not None
    assert stats.min_hw == (299, 299)


def _write_xlsx(path: Path, rows: list[tuple], header=("FILE NAME", "FORMAT", "SIZE", "URL")) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(list(header))
    for r in rows:
        ws.append(list(r))
    wb.save(path)


def test_metadata_xlsx_gives_sources(covid_tree: Path) -> None:
    _write_xlsx(
        covid_tree / "COVID.metadata.xlsx",
        [
            ("COVID-1", "PNG", "256*256", "https://github.com/ieee8023/covid-chestxray-dataset"),
            ("covid-2", "PNG", "256*256", "https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/data"),
        ],
    )
    _write_xlsx(covid_tree / "Normal.metadata.xlsx", [("NORMAL-1", "PNG", "256*256", "https://sirm.org/category/covid-19/")])
    (covid_tree / "Lung_Opacity.metadata.xlsx").write_text("not a workbook")
    ds = load_dataset(covid_tree)
    src = {s.path.name: s.source for s in ds.samples}
    assert src["COVID-1.png"] == "github.com/ieee8023"
    assert src["COVID-2.png"] == "kaggle.com/rsna-pneumonia-detection-challenge"
    assert src["COVID-3.png"] is None
    assert src["Normal-1.png"] == "sirm.org/covid-19"
    assert src["Lung_Opacity-1.png"] is None
    meta = [p for p in ds.problems if p.kind == "metadata"]
    assert len(meta) == 1 and meta[0].path.name == "Lung_Opacity.metadata.xlsx"


def test_metadata_missing_column(covid_tree: Path) -> None:
    _write_xlsx(covid_tree / "COVID.metadata.xlsx", [("COVID-1", "x")], header=("FILE NAME", "LINK"))
    ds = load_dataset(covid_tree)
    assert any(p.kind == "metadata" and "URL" in p.reason for p in ds.problems)


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://bimcv.cipf.es/bimcv-projects/bimcv-covid19/#1590858128006", "bimcv.cipf.es/bimcv-projects"),
        ("https://synthetic.lungaudit/source-A", "synthetic.lungaudit/source-A"),
        ("http://example.org", "example.org"),
        ("", None),
    ],
)
def test_source_from_url(url: str, name: str | None) -> None:
    assert source_from_url(url) == name


# ----------------------------------------------------------------------------- folders / segonly


def test_folders_layout(tmp_path: Path, h) -> None:
    root = tmp_path / "f"
    for cls, n in (("tb", 2), ("healthy", 3)):
        for i in range(n):
            h.write_image(root / cls / f"{i}.png", h.gradient())
    h.write_image(root / "healthy" / "x.jpg", h.gradient())
    (root / "healthy" / "notes.txt").write_text("hi")
    (root / "README.md").write_text("top-level files are not classes")
    ds = load_dataset(root)
    assert ds.layout == "folders" and ds.class_names == ("healthy", "tb")
    assert len(ds.samples) == 6 and all(s.mask_path is None for s in ds.samples)
    assert [p.path.name for p in ds.problems] == ["notes.txt"]


def test_segonly_layout(tmp_path: Path, h) -> None:
    root = tmp_path / "s"
    for i in range(4):
        h.write_image(root / "images" / f"{i}.png", h.gradient())
        if i:
            h.write_image(root / "masks" / f"{i}.png", h.lung_mask())
    ds = load_dataset(root)
    assert ds.layout == "segonly" and ds.class_names == () and not ds.labeled
    assert len(ds.samples) == 4 and sum(s.mask_path is not None for s in ds.samples) == 3
    assert [p.kind for p in ds.problems] == ["mask"]


@pytest.mark.skipif(not SHENZHEN.is_dir(), reason=f"real Shenzhen sample not present at {SHENZHEN}")
def test_real_shenzhen_segonly() -> None:
    ds, stats = scan_dataset(SHENZHEN)
    assert ds.layout == "segonly"
    assert len(ds.samples) == 162 and ds.problems == []
    assert all(s.mask_path is not None for s in ds.samples)
    assert stats.min_hw == stats.max_hw == (512, 512)
    assert {s.split for s in ds.samples} == {"train", "val", "test"}


# ----------------------------------------------------------------------------- manifest


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_manifest_layout(covid_tree: Path) -> None:
    rows = [
        ["COVID/images/COVID-1.png", "COVID", "COVID/masks/COVID-1.png", "train", "src-A", "p1", "markers", "1 2 3 4", ""],
        ["COVID/images/COVID-2.png", "COVID", "COVID/masks/COVID-2.png", "test", "src-B", "p2", "", "", "twins/COVID/COVID-2.png"],
        ["Normal/images/Normal-1.png", "Normal", "", "Validation", "", "", "", "", ""],
        ["Normal/images/gone.png", "Normal", "", "train", "", "", "", "", ""],
        ["Normal/images/Normal-2.png", "Normal", "Normal/masks/gone.png", "holdout", "", "", "", "", ""],
        ["Normal/images/Normal-3.png", "Normal", "Normal/masks/gone.png", "train", "", "", "", "", ""],
    ]
    header = ["path", "label", "mask", "split", "source", "patient_id", "shortcut", "shortcut_box", "twin"]
    _write_csv(covid_tree / "manifest.csv", header, rows)
    assert detect_layout(covid_tree) == "manifest"
    ds = load_dataset(covid_tree)
    assert ds.layout == "manifest" and ds.class_names == CLASS_NAMES
    s = {x.path.name: x for x in ds.samples}
    assert set(s) == {"COVID-1.png", "COVID-2.png", "Normal-1.png", "Normal-3.png"}
    assert s["COVID-1.png"].split == "train" and s["COVID-1.png"].source == "src-A" and s["COVID-1.png"].patient_id == "p1"
    assert s["COVID-1.png"].extra == {"shortcut": "markers", "shortcut_box": "1 2 3 4", "twin": None}
    assert s["COVID-2.png"].extra["twin"] == (covid_tree / "twins/COVID/COVID-2.png").resolve()
    assert s["Normal-1.png"].split == "val" and s["Normal-1.png"].mask_path is None
    assert s["Normal-3.png"].mask_path is None
    reasons = {(p.path.name, p.kind): p.reason for p in ds.problems}
    assert "file not found" in reasons[("gone.png", "image")]
    assert "bad split value 'holdout'" in reasons[("Normal-2.png", "manifest")]
    assert "mask file not found" in reasons[("gone.png", "mask")]
    # the CSV file itself also works as root, with the same result
    ds2 = load_dataset(covid_tree / "manifest.csv")
    assert [x.path for x in ds2.samples] == [x.path for x in ds.samples]


def test_manifest_missing_column_is_clear(tmp_path: Path) -> None:
    p = _write_csv(tmp_path / "m.csv", ["file", "label"], [["a.png", "COVID"]])
    with pytest.raises(DatasetError, match=r"m\.csv.*lacks required column\(s\) path"):
        load_dataset(p)


def test_manifest_other_labels_sorted_and_splits_assigned(tmp_path: Path, h) -> None:
    rows = []
    for i in range(10):
        h.write_image(tmp_path / f"{i}.png", h.gradient())
        rows.append([f"{i}.png", "zebra" if i % 2 else "apple"])
    p = _write_csv(tmp_path / "list.csv", ["path", "label"], rows)
    ds = load_dataset(p, "manifest", data_cfg=DataConfig(seed=3, val_frac=0.2, test_frac=0.2))
    assert ds.class_names == ("apple", "zebra")
    assert all(s.split in ("train", "val", "test") for s in ds.samples)


# ----------------------------------------------------------------------------- whole-data-set errors


def test_empty_and_missing_raise(tmp_path: Path, h) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        load_dataset(tmp_path / "empty")
    assert issubclass(DatasetError, ValueError)
    bad = tmp_path / "bad"
    (bad / "COVID" / "images").mkdir(parents=True)
    (bad / "COVID" / "images" / "a.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="none of the images could be read") as e:
        load_dataset(bad)
    assert any(p.reason == "empty file (0 bytes)" for p in e.value.problems)
    with pytest.raises(DatasetError, match="unknown layout"):
        load_dataset(bad, "zip")


def test_validate_false_decodes_nothing(malformed_tree) -> None:
    root, _ = malformed_tree
    ds = load_dataset(root, validate=False)
    assert any(s.path.name == "zero.png" for s in ds.samples)  # not decoded, so not dropped
    assert {p.kind for p in ds.problems} == {"class", "mask"}


def test_write_problems_csv(malformed_tree, tmp_path: Path) -> None:
    root, expected = malformed_tree
    ds = load_dataset(root)
    out = write_problems_csv(ds.problems, tmp_path / "out" / "problems.csv")
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(expected) and set(rows[0]) == {"path", "kind", "reason"}


# ----------------------------------------------------------------------------- CLI


def _invoke(args: list[str]):
    import lungaudit.cli.cmd_data  # noqa: F401  (registers the command)
    from lungaudit.cli.app import app

    # Typer runs a lone command without its name; other test modules may have registered more.
    single = len(app.registered_commands) + len(app.registered_groups) == 1 and app.registered_callback is None
    return CliRunner().invoke(app, args[1:] if single else args, terminal_width=250)


def test_inspect_cli_lists_problems(malformed_tree, tmp_path: Path) -> None:
    root, expected = malformed_tree
    out = tmp_path / "p.csv"
    res = _invoke(["inspect", str(root), "--problems-csv", str(out)])
    assert res.exit_code == 0, res.output
    for name in expected:
        assert name in res.output
    assert "truncated PNG" in res.output and "COVID" in res.output
    assert out.is_file() and len(out.read_text().splitlines()) == len(expected) + 1


def test_inspect_cli_default_target_and_empty(covid_tree: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = _invoke(["inspect", str(covid_tree)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "runs" / "inspect" / covid_tree.name / "problems.csv").is_file()
    assert not (covid_tree / "problems.csv").exists()
    assert load_dataset(covid_tree).problems == []  # the report itself does not disturb the layout
    (tmp_path / "empty").mkdir()
    res = _invoke(["inspect", str(tmp_path / "empty")])
    assert res.exit_code == 2
    assert "error" in res.output.lower() or "error" in (res.stderr if hasattr(res, "stderr") else "")
    assert np is not None
