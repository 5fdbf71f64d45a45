"""Real radiographs end to end (issue 10): reuse a segmenter, the audit follows the run, caps and sizes."""

from __future__ import annotations

import csv
import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

import lungaudit as la
from lungaudit.cli.main import app
from lungaudit.data.imageio import ImageReadError, read_image
from lungaudit.data.layouts import load_dataset
from lungaudit.runs.runinfo import read_run_info, sample_key
from pipeline_helpers import tiny_config
from lungaudit.training.pipeline import train

runner = CliRunner()


@pytest.fixture(scope="module")
def maskless(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_synth's images in plain class folders: labelled, no lung masks (a typical real set)."""
    root = tmp_path_factory.mktemp("maskless")
    for s in load_dataset(tiny_synth).samples:
        target = root / s.label / s.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(s.path, target)
    return root


@pytest.fixture(scope="module")
def reused_run(maskless: Path, tiny_run, tmp_path_factory: pytest.TempPathFactory):
    project = tmp_path_factory.mktemp("reuse")
    cfg = tiny_config(maskless, project, "data.test_frac=0.3", "cls.epochs=1")
    return train(cfg, seg_from=tiny_run.run_dir)


def test_a_set_without_masks_needs_a_segmenter_and_leaves_nothing_when_refused(maskless: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="--seg-from"):
        train(tiny_config(maskless, tmp_path))
    assert not (tmp_path / "train").exists()  # refused before any run folder was made


def test_seg_from_fills_every_mask_and_is_recorded(reused_run, tiny_run):
    run = reused_run.run_dir
    info = read_run_info(run)
    seg = tiny_run.run_dir / "weights" / "seg_best.pt"
    assert info.seg_from["path"] == str(seg.resolve())
    assert (run / "weights" / "seg_best.pt").read_bytes() == seg.read_bytes()  # the run carries its U-Net
    assert not (run / "weights" / "seg_last.pt").exists()  # no segmenter was trained
    assert reused_run.test_metrics["classification"]["masked"]["n"] > 0


def test_seg_from_a_manifest_without_a_mask_column(maskless: Path, tiny_run, tmp_path: Path):
    rows = [f"{p},{p.parent.name}" for p in sorted(maskless.rglob("*.png"))]
    (tmp_path / "m.csv").write_text("path,label\n" + "\n".join(map(str, rows)) + "\n")
    result = train(tiny_config(tmp_path / "m.csv", tmp_path / "proj", "cls.epochs=1"), seg_from=tiny_run.run_dir / "weights" / "seg_best.pt")
    assert (result.run_dir / "weights" / "cls_best.pt").is_file()


def _run_split(run: Path, split: str) -> set[str]:
    with open(run / "splits.csv", newline="") as f:
        return {r["path"] for r in csv.DictReader(f) if r["split"] == split}


def test_audit_follows_the_run_data_split_and_config(reused_run, tmp_path: Path):
    run = reused_run.run_dir
    res = la.audit(run=run, split="test", out_dir=tmp_path / "a", num_workers=0)  # no data set given
    keys = {r["key"] for r in csv.DictReader(open(tmp_path / "a" / "audit.csv"))}
    assert keys == _run_split(run, "test")  # exactly the run's test split (test_frac 0.3, not the default)
    assert res.summary.counts.trained_on == 0
    full = la.audit(run=run, out_dir=tmp_path / "b", num_workers=0)
    assert full.summary.counts.trained_on == len(_run_split(run, "train") | _run_split(run, "val"))
    assert full.summary.config["out_threshold"] == 0.5  # the run's own audit section


def test_cli_audit_without_a_dataset(reused_run, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["audit", "--run", str(reused_run.run_dir), "--split", "test", "--name", "cli", "--workers", "0", "--no-report"])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "runs/audit/cli/summary.json").read_text())
    assert s["counts"]["audited"] == len(_run_split(reused_run.run_dir, "test"))


def _png_header(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring a huge image, followed by a tiny IDAT and IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_pixel_cap_refuses_before_decoding(tmp_path: Path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(30000, 30000))  # 875 KB on disk in the wild; 900 MP decoded
    with pytest.raises(ImageReadError, match=r"30000x30000 \(900 megapixels\), above the cap of 50 megapixels"):
        read_image(bomb)
    with pytest.raises(ImageReadError, match="above the cap of 1 megapixels"):
        read_image(bomb, max_pixels=1_000_000)
    (tmp_path / "Normal").mkdir()
    shutil.move(bomb, tmp_path / "Normal" / "bomb.png")
    with pytest.raises(ValueError, match="none of the images could be read") as e:
        load_dataset(tmp_path)
    assert "megapixels" in e.value.problems[-1].reason


def test_thumbnails_stay_small(tiny_synth: Path, tiny_run, tmp_path: Path):
    res = la.audit(tiny_synth, run=tiny_run.run_dir, out_dir=tmp_path / "a", overrides=["audit.out_threshold=0.0"], num_workers=0)
    thumbs = list((tmp_path / "a" / "thumbs").glob("*.jpg"))
    assert len(thumbs) == res.summary.counts.flagged > 0
    assert max(t.stat().st_size for t in thumbs) < 15_000


def test_keys_are_relative_to_the_data_root(tiny_synth: Path, tiny_run, tmp_path: Path):
    ds = load_dataset(tiny_synth)
    la.audit(ds, run=tiny_run.run_dir, out_dir=tmp_path / "a", num_workers=0)
    keys = [r["key"] for r in csv.DictReader(open(tmp_path / "a" / "audit.csv"))]
    assert keys == [sample_key(s.path, ds.root) for s in ds.samples] and not any(k.startswith("/") for k in keys)
