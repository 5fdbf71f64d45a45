"""Seeded random damage to valid files of every kind, and random hostile labels.

The hand-written cases in test_hostile_inputs.py pin the damage we thought of; these cover code
paths nobody listed (issue 12: "randomized cases so that new code paths get covered too"). Each case
may be accepted or refused, but a refusal is exit 2 naming the file, and nothing ever raises.
Seeds are fixed, so a failure reproduces; the damaged file is named in the assertion message.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from hostile.hostile_kit import (
    SEPARATORS, clone_run, dicom_bytes, gray, invoke, lung_mask, mutations, names, png_bytes, random_label, tree, write,
)

N = 10  # damaged copies per file kind


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(sum(map(ord, name)))  # one fixed stream per case


def _manifest(root: Path, rows: list[dict[str, str]]) -> Path:
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(rows)
    return root / "manifest.csv"


@pytest.mark.parametrize("kind", ["png", "jpg", "tif", "dcm", "mask"])
def test_damaged_images_and_masks_are_loaded_or_reported(tmp_path, kind):
    import cv2

    img = gray(seed=3)
    valid = {
        "png": png_bytes(img), "jpg": cv2.imencode(".jpg", img)[1].tobytes(),
        "tif": cv2.imencode(".tif", img.astype(np.float32) / 255)[1].tobytes(), "dcm": dicom_bytes(), "mask": png_bytes(lung_mask()),
    }[kind]  # fmt: skip
    root = tmp_path / "d"
    write(root / "good.png", png_bytes(img))
    rows = [{"path": "good.png", "label": "Normal"}]
    ext = "png" if kind == "mask" else kind
    for i, data in enumerate(mutations(valid, _rng(kind), N)):
        write(root / f"bad{i}.{ext}", data)
        rows.append({"path": "good.png", "label": "COVID", "mask": f"bad{i}.png"} if kind == "mask" else {"path": f"bad{i}.{ext}", "label": "COVID"})
    if kind == "mask":  # one image row per damaged mask
        for i, r in enumerate(rows[1:]):
            shutil.copy(root / "good.png", root / f"img{i}.png")
            r["path"] = f"img{i}.png"
    _manifest(root, rows)
    res = invoke("inspect", root, "--problems-csv", tmp_path / "p.csv", code=0)
    with open(tmp_path / "p.csv", newline="") as f:
        problems = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(f)}
    assert all(reason.strip() for reason in problems.values())
    assert "good.png" not in problems
    for name in problems:
        assert names(res, name)


def _damaged_texts(valid: bytes, name: str) -> list[bytes]:
    return mutations(valid, _rng(name), N)


def test_damaged_summaries(hostile_audit, tmp_path):
    valid = (hostile_audit.audit_dir / "summary.json").read_bytes()
    for i, data in enumerate(_damaged_texts(valid, "summary")):
        d = tmp_path / f"a{i}"
        shutil.copytree(hostile_audit.audit_dir, d, ignore=shutil.ignore_patterns("overlays", "thumbs", "partials", "*.html", ".lock"))
        (d / "summary.json").write_bytes(data)
        res = invoke("gate", d, "--max-flag-rate", "1.0", "--min-mean-in-lung", "0.0", code=(0, 1, 2))
        if res.exit_code == 2:
            assert names(res, d), (i, res.output)


def test_damaged_audit_csvs(hostile_audit, tmp_path):
    valid = (hostile_audit.audit_dir / "audit.csv").read_bytes()
    for i, data in enumerate(_damaged_texts(valid, "audit.csv")):
        d = tmp_path / f"a{i}"
        shutil.copytree(hostile_audit.audit_dir, d, ignore=shutil.ignore_patterns("overlays", "thumbs", "partials", "*.html", ".lock"))
        (d / "audit.csv").write_bytes(data)
        res = invoke("report", d, code=(0, 2))
        if res.exit_code == 2:
            assert names(res, d), (i, res.output)


def test_damaged_configs(tmp_path):
    from lungaudit.config import packaged_config

    valid = packaged_config().read_bytes()
    for i, data in enumerate(_damaged_texts(valid, "config")):
        cfg = write(tmp_path / f"c{i}.yaml", data)
        res = invoke("config", "--config", cfg, code=(0, 2))
        if res.exit_code == 2:
            assert names(res, cfg), (i, res.output)


def test_damaged_policies(hostile_audit, tmp_path):
    from lungaudit.config import packaged_config

    valid = packaged_config("gate.yaml").read_bytes()
    for i, data in enumerate(_damaged_texts(valid, "policy")):
        policy = write(tmp_path / f"p{i}.yaml", data)
        invoke("gate", hostile_audit.audit_dir, "--policy", policy, "--junit", tmp_path / "j.xml", code=(0, 1, 2))


def test_damaged_manifests(hostile_data, tmp_path):
    valid = (hostile_data / "manifest.csv").read_bytes()
    for i, data in enumerate(_damaged_texts(valid, "manifest")):
        m = write(hostile_data.parent / f"m{i}.csv", data)  # beside the real one: relative paths still resolve
        try:
            res = invoke("inspect", m, "--problems-csv", tmp_path / f"p{i}.csv", code=(0, 2))
            if res.exit_code == 2:
                assert names(res, m) or names(res, hostile_data.parent), (i, res.output)
        finally:
            m.unlink()


def test_damaged_decisions(hostile_data, tmp_path):
    rows = list(csv.DictReader(open(hostile_data / "manifest.csv", newline="", encoding="utf-8")))
    valid = ("key,decision,new_label\n" + "".join(f'"{r["path"]}",exclude,\n' for r in rows[:4])).encode()
    for i, data in enumerate(_damaged_texts(valid, "decisions")):
        dec = write(tmp_path / f"d{i}.csv", data)
        res = invoke("apply-review", dec, hostile_data, "--out", tmp_path / f"o{i}", code=(0, 2))
        if res.exit_code == 2:
            assert names(res, dec) or names(res, hostile_data), (i, res.output)


def test_damaged_checkpoints(tiny_run, tiny_synth, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(tiny_synth / "Normal" / "images" / "Normal-1.png", one / "a.png")
    _manifest(one, [{"path": "a.png", "label": "Normal"}])
    valid = (tiny_run.run_dir / "weights" / "cls_best.pt").read_bytes()
    for i, data in enumerate(mutations(valid, _rng("checkpoint"), 4)):
        run = clone_run(tiny_run.run_dir, tmp_path / f"r{i}")
        (run / "weights" / "cls_best.pt").write_bytes(data)
        res = invoke("audit", one, "--run", run, "--project", tmp_path / f"p{i}", "--device", "cpu", "--workers", "0",
                     "--no-report", code=(0, 2))  # fmt: skip
        if res.exit_code == 2:
            assert names(res, run), (i, res.output)


def test_random_hostile_labels_and_sources(hostile_data, tmp_path, monkeypatch):
    """Labels and sources drawn from separators, markup and HTML: printed literally, written nowhere else."""
    rng = _rng("labels")
    rows = list(csv.DictReader(open(hostile_data / "manifest.csv", newline="", encoding="utf-8")))
    labels = [random_label(rng) for _ in rows]
    for r, label in zip(rows, labels):
        r.update(label=label, source=random_label(rng), path=str(hostile_data / r["path"]), mask=str(hostile_data / r["mask"]))
    data = tmp_path / "d"
    data.mkdir()
    _manifest(data, rows)
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    res = invoke("inspect", data, code=0)
    new = tree(tmp_path) - before
    assert len(new) == 1 and (tmp_path / "runs" / "inspect") in next(iter(new)).parents
    printable = [lab for lab in labels if lab.isprintable() and len(lab) < 30]
    assert printable and all(lab.strip() in res.output for lab in printable), printable


def test_data_derived_names_are_only_names():
    """Property of the three name builders over many random hostile strings: one path component,
    only [A-Za-z0-9_.-], and distinct wherever their running index differs."""
    from lungaudit.audit.aggregate import mean_outside_name
    from lungaudit.audit.overlay import overlay_name, thumbnail_for
    from lungaudit.utils import safe_filename

    rng = _rng("names")
    pool = [random_label(rng) for _ in range(300)] + SEPARATORS + ["", ".", "..", "/", "C:\\x", "CON", "\u00e9\u4e2d"]
    seen = set()
    for i, text in enumerate(pool):
        for name in (safe_filename(text), mean_outside_name(i, text), overlay_name(i, text), thumbnail_for(overlay_name(i, text))):
            parts = Path(name).parts
            assert all(p not in ("", ".", "..") for p in parts) and not Path(name).is_absolute(), (text, name)
            assert all(c.isascii() and (c.isalnum() or c in "_-./") for c in name), (text, name)
        key = mean_outside_name(i, text)
        assert key not in seen
        seen.add(key)
