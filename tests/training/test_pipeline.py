import csv
import json

import pytest
import torch

from lungaudit.runs.checkpoint import CheckpointError, load_checkpoint
from lungaudit.training.pipeline import train
from pipeline_helpers import tiny_config


def _metric_keys(run_dir):
    return [(r["stage"], int(r["epoch"])) for r in csv.DictReader(open(run_dir / "metrics.csv"))]


def test_run_folder_has_everything(tiny_run):
    d = tiny_run.run_dir
    for name in ("seg_best.pt", "seg_last.pt", "cls_best.pt", "cls_last.pt"):
        raw = torch.load(d / "weights" / name, weights_only=True)
        assert raw["lungaudit_version"] and raw["class_names"] and raw["config"]
    for name in ("config.yaml", "metrics.csv", "test_metrics.json", "learning_curves.png", "confusion_matrix.png",
                 "roc.png", "mask_examples.png"):
        assert (d / name).is_file(), name
    assert _metric_keys(d) == [("seg", 1), ("cls", 1), ("cls", 2)]
    tm = json.loads((d / "test_metrics.json").read_text())
    for view in ("full", "masked", "twin"):
        block = tm["classification"][view]
        assert set(block["per_class"]["COVID"]) == {"sensitivity", "specificity", "ppv", "npv", "f1", "auc"}
        assert 0 <= block["accuracy"] <= 1
    assert 0 <= tm["segmentation"]["dice"] <= 1
    assert load_checkpoint(d / "weights" / "cls_best.pt", kind="cls").class_names[3] == "Viral Pneumonia"


def test_resume_after_interruption_continues_without_duplicates(tiny_synth, tmp_path):
    cfg = tiny_config(tiny_synth, tmp_path, "cls.epochs=3")
    run_dir = tmp_path / "train" / "exp"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir=run_dir, interrupt_after=("cls", 1))
    assert _metric_keys(run_dir) == [("seg", 1), ("cls", 1)]
    assert load_checkpoint(run_dir / "weights" / "cls_last.pt").epoch == 1
    result = train(cfg, run_dir=run_dir, resume=True)
    assert _metric_keys(run_dir) == [("seg", 1), ("cls", 1), ("cls", 2), ("cls", 3)]
    assert load_checkpoint(run_dir / "weights" / "cls_last.pt").epoch == 3
    assert result.test_metrics["classification"]["full"]["n"] > 0


def test_resume_refuses_a_changed_model(tiny_synth, tmp_path):
    cfg = tiny_config(tiny_synth, tmp_path, "cls.epochs=2")
    run_dir = tmp_path / "train" / "exp"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir=run_dir, interrupt_after=("cls", 1))
    changed = tiny_config(tiny_synth, tmp_path, "cls.epochs=2", "cls.arch=resnet34")
    with pytest.raises(CheckpointError, match="arch"):
        train(changed, run_dir=run_dir, resume=True)


def test_segmentation_only_data_set(tmp_path, tiny_synth):
    import shutil

    seg_root = tmp_path / "segonly"
    (seg_root / "images").mkdir(parents=True)
    (seg_root / "masks").mkdir()
    for p in sorted((tiny_synth / "Normal" / "images").glob("*.png")):
        shutil.copy(p, seg_root / "images" / p.name)
        shutil.copy(tiny_synth / "Normal" / "masks" / p.name, seg_root / "masks" / p.name)
    result = train(tiny_config(seg_root, tmp_path), stage="seg")
    assert (result.run_dir / "weights" / "seg_best.pt").is_file()
    assert not (result.run_dir / "weights" / "cls_best.pt").exists()
    with pytest.raises(ValueError, match="no class labels"):
        train(tiny_config(seg_root, tmp_path), stage="cls")
