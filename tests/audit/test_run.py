"""The audit pipeline end to end: outputs, resumption, and a planted shortcut it must catch."""

import csv
import json
from pathlib import Path

import cv2
import numpy as np

import pytest
import torch
from torch import nn

from lungaudit.audit import run as audit_run
from lungaudit.audit import store as audit_store
from lungaudit.audit.schema import BASE_COLUMNS
from lungaudit.audit.store import StoreError
from lungaudit.runs.runinfo import sample_key
from lungaudit.classification.model import CLASSIFIERS
from lungaudit.config import CLASS_NAMES, AuditConfig, ClsConfig, to_dict
from lungaudit.data.layouts import load_dataset
from lungaudit.runs.checkpoint import Checkpoint, save_checkpoint


def _rows(d):
    return list(csv.DictReader(open(d / "audit.csv")))


def test_audit_outputs(tiny_synth, tiny_run, tmp_path):
    ds = load_dataset(tiny_synth)
    ds.samples = ds.split("test")
    res = audit_run.audit_dataset(ds, tiny_run.run_dir, tmp_path / "a", AuditConfig(out_threshold=0.0), device="cpu")
    rows = _rows(tmp_path / "a")
    assert len(rows) == len(ds.samples) and len({r["key"] for r in rows}) == len(rows)
    assert list(rows[0])[: len(BASE_COLUMNS)] == list(BASE_COLUMNS)
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert s["schema_version"] == 2 and s["counts"]["audited"] == len(rows)
    assert len(s["checkpoints"]["cls"]["sha256"]) == 64 and len(s["dataset"]["fingerprint"]) == 64
    # threshold 0 flags every image with evidence, and each flagged image gets an overlay
    flagged = [r for r in rows if r["flagged"] == "true"]
    assert flagged and all((tmp_path / "a" / r["overlay"]).is_file() for r in flagged)
    assert all("out_of_lung_energy" in r["reasons"] for r in flagged if r["no_evidence"] == "false")
    assert any((tmp_path / "a").glob("mean_outside_*.png"))
    assert res.summary.metrics.confusion
    # every flagged image also gets a small JPEG thumbnail for the report
    assert all((tmp_path / "a" / "thumbs" / (Path(r["overlay"]).stem + ".jpg")).is_file() for r in flagged)


def test_resume_after_crash_loses_and_duplicates_nothing(tiny_synth, tiny_run, tmp_path, monkeypatch):
    monkeypatch.setattr(audit_store, "CHUNK", 3)
    ds = load_dataset(tiny_synth)
    out = tmp_path / "a"
    with pytest.raises(KeyboardInterrupt):
        audit_run.audit_dataset(ds, tiny_run.run_dir, out, AuditConfig(batch_size=3), device="cpu", stop_after_chunks=2, num_workers=0)
    partial = _rows(out)
    assert len(partial) == 6
    # a torn last line, as if the process died mid-write
    with open(out / "audit.csv", "a") as f:
        f.write("/half/a/row,")
    audit_run.audit_dataset(ds, tiny_run.run_dir, out, AuditConfig(batch_size=3), device="cpu", num_workers=0, resume=True)
    rows = _rows(out)
    assert sorted(r["key"] for r in rows) == sorted(sample_key(s.path, ds.root) for s in ds.samples)
    fresh = tmp_path / "b"
    audit_run.audit_dataset(ds, tiny_run.run_dir, fresh, AuditConfig(batch_size=3), device="cpu", num_workers=0)
    by_key = {r["key"]: r for r in _rows(fresh)}
    for r in rows:  # resumed rows equal a clean run's
        assert r["pred"] == by_key[r["key"]]["pred"]
        assert r["e_in"] == pytest.approx(by_key[r["key"]]["e_in"]) or r["e_in"] == by_key[r["key"]]["e_in"]
    s_resumed = json.loads((out / "summary.json").read_text())
    s_fresh = json.loads((fresh / "summary.json").read_text())
    assert s_resumed["counts"] == s_fresh["counts"]
    assert s_resumed["overall"] == pytest.approx(s_fresh["overall"])


def test_resume_is_never_silent_and_never_mixes(tiny_synth, tiny_run, tmp_path, monkeypatch):
    monkeypatch.setattr(audit_store, "CHUNK", 3)
    ds = load_dataset(tiny_synth)
    out = tmp_path / "a"
    with pytest.raises(KeyboardInterrupt):
        audit_run.audit_dataset(ds, tiny_run.run_dir, out, AuditConfig(batch_size=3), device="cpu", stop_after_chunks=1, num_workers=0)
    with pytest.raises(StoreError, match="already holds audit rows"):  # no silent resume by default
        audit_run.audit_dataset(ds, tiny_run.run_dir, out, AuditConfig(batch_size=3), device="cpu", num_workers=0)
    with pytest.raises(StoreError, match=r"config\.out_threshold: 0\.5 -> 0\.3"):  # another threshold
        audit_run.audit_dataset(ds, tiny_run.run_dir, out, AuditConfig(batch_size=3, out_threshold=0.3), device="cpu",
                                num_workers=0, resume=True)
    ds.samples = ds.samples[:-1]  # other images
    with pytest.raises(StoreError, match="data.images"):
        audit_run.audit_dataset(ds, tiny_run.run_dir, out, AuditConfig(batch_size=3), device="cpu", num_workers=0, resume=True)
    assert len(_rows(out)) == 3  # nothing was added by the refused attempts


def test_torn_csv_at_a_line_boundary_redoes_the_whole_chunk(tiny_synth, tiny_run, tmp_path, monkeypatch):
    """Rows lost from the CSV must also leave the mean heatmaps: the chunk is redone whole."""
    monkeypatch.setattr(audit_store, "CHUNK", 4)
    ds = load_dataset(tiny_synth)
    out, fresh = tmp_path / "a", tmp_path / "b"
    audit_run.audit_dataset(ds, tiny_run.run_dir, out, AuditConfig(batch_size=4, overlays=False), device="cpu", num_workers=0)
    lines = (out / "audit.csv").read_text().splitlines(keepends=True)
    (out / "audit.csv").write_text("".join(lines[:-2]))  # cut two whole rows off the last chunk
    res = audit_run.audit_dataset(ds, tiny_run.run_dir, out, AuditConfig(batch_size=4, overlays=False), device="cpu",
                                  num_workers=0, resume=True)
    ref = audit_run.audit_dataset(ds, tiny_run.run_dir, fresh, AuditConfig(batch_size=4, overlays=False), device="cpu", num_workers=0)
    assert len(ds.samples) % 4 == 0 and res.resumed_rows == len(ds.samples) - 4  # the last chunk was redone whole
    sums_a = sum(np.load(p)["counts"].sum() for p in (out / "partials").glob("*.npz"))
    assert sums_a == len(ds.samples)  # every image is in the mean heatmaps exactly once
    assert res.summary.counts == ref.summary.counts


def test_second_writer_is_refused(tiny_synth, tiny_run, tmp_path):
    ds = load_dataset(tiny_synth)
    out = tmp_path / "a"
    holder = audit_store.AuditStore(out, ["COVID"], {"x": 1}, resume=False, map_side=8)
    try:
        with pytest.raises(StoreError, match="being written by another audit"):
            audit_run.audit_dataset(ds, tiny_run.run_dir, out, AuditConfig(), device="cpu", num_workers=0)
    finally:
        holder.close()


class Window(nn.Module):
    def __init__(self, window: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("window", window)

    def forward(self, x):
        return x * self.window


class WindowModel(nn.Module):
    """Looks only through a fixed window: class 0 (COVID) when it holds a white token, else class 2.

    With the window on the top-left corner this is a pure marker-reader, the shortcut the auditor
    must catch; with the window on the left lung it is a lung-reader it must leave alone. The
    window is part of ``layer4`` so its activations, and hence its Grad-CAM, live only there.
    """

    def __init__(self, size: int, corner: bool) -> None:
        super().__init__()
        w = torch.zeros(1, 1, size, size)
        if corner:
            w[..., : size // 5, : size // 5] = 1
        else:
            # the core of the left lung field, inside the lungs of (nearly) every phantom
            w[..., int(0.4 * size) : int(0.6 * size), int(0.25 * size) : int(0.35 * size)] = 1
        conv = nn.Conv2d(1, 2, 1)
        self.layer4 = nn.Sequential(conv, nn.ReLU(), Window(w))
        self.fc = nn.Linear(2, 4)
        with torch.no_grad():
            conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            conv.bias.copy_(torch.tensor([-0.95, 0.95]))
            self.fc.weight.zero_()
            self.fc.bias.zero_()
            self.fc.weight[0, 0] = 500.0
            self.fc.weight[2, 1] = 5.0

    def forward(self, x):
        return self.fc(self.layer4(x).amax((2, 3)))


for _name, _corner in (("test_corner_reader", True), ("test_lung_reader", False)):
    if _name not in CLASSIFIERS:
        CLASSIFIERS.register(_name)(lambda cfg, n, c=_corner: WindowModel(cfg.image_size, c))


def _window_run(tmp_path, arch):
    cfg = ClsConfig(arch=arch, image_size=64)
    model = CLASSIFIERS.get(arch)(cfg, 4)
    run = tmp_path / arch
    save_checkpoint(Checkpoint(kind="cls", config=to_dict(cfg), class_names=list(CLASS_NAMES),
                               model_state=model.state_dict(), epoch=1, best_metric=0.0), run / "weights" / "cls_best.pt")
    return run


@pytest.fixture()
def token_data(tiny_synth, tmp_path):
    """tiny_synth images, every other one with a white burned-in token in the top-left corner."""
    ds = load_dataset(tiny_synth)
    lines, planted = ["path,label,mask"], set()
    for i, s in enumerate(ds.samples):
        img = cv2.imread(str(s.path), cv2.IMREAD_GRAYSCALE)
        if i % 2 == 0:
            cv2.putText(img, "R", (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 255, 1)
            planted.add(i)
        out = tmp_path / "tok" / f"{i:03d}.png"
        out.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(out), img)
        lines.append(f"{out},{s.label},{s.mask_path}")
    (tmp_path / "tok" / "manifest.csv").write_text("\n".join(lines) + "\n")
    return load_dataset(tmp_path / "tok" / "manifest.csv"), planted


def test_auditor_catches_a_planted_corner_shortcut(token_data, tmp_path):
    ds, planted = token_data
    run = _window_run(tmp_path, "test_corner_reader")
    audit_run.audit_dataset(ds, run, tmp_path / "a", AuditConfig(), device="cpu", num_workers=0)
    rows = {int(Path(r["key"]).stem): r for r in _rows(tmp_path / "a")}
    assert len(rows) == len(ds.samples)
    for i, r in rows.items():
        if i in planted:  # the token drives the prediction and all its evidence sits outside the lungs
            assert r["pred"] == "COVID"
            assert r["flagged"] == "true" and "out_of_lung_energy" in r["reasons"]
            assert float(r["e_out_tol"]) > 0.9
            assert r["region"] == "border"
            assert r["flip"] == "true" and "flip_under_masking" in r["reasons"]  # masking removes the token
        else:
            assert r["pred"] == "Normal"
    # marker detection is a heuristic on 64 px images here; it must still find nearly every token
    overlaps = [rows[i]["marker_overlap"] == "true" for i in planted]
    assert sum(overlaps) >= 0.8 * len(overlaps)


def test_auditor_leaves_a_lung_reader_alone(token_data, tmp_path):
    ds, _ = token_data
    run = _window_run(tmp_path, "test_lung_reader")
    audit_run.audit_dataset(ds, run, tmp_path / "a", AuditConfig(), device="cpu", num_workers=0)
    rows = [r for r in _rows(tmp_path / "a") if r["no_evidence"] == "false"]
    assert len(rows) >= 0.9 * len(ds.samples)
    assert all(float(r["e_in_tol"]) > 0.8 and r["flagged"] == "false" for r in rows)
