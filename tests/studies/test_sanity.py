"""``lungaudit sanity``: both randomisation tests per method, the random-label model, the recorded verdicts."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import lungaudit as la
from lungaudit.cli.main import app
from lungaudit.data.records import Sample
from lungaudit.explain.cam import CAM_METHODS, method_info
from lungaudit.explain.verdicts import VERDICTS, apply_verdicts, load_verdicts, packaged_verdicts, verdict_note
from lungaudit.studies.common import pick_images
from lungaudit.studies.sanity import verdict_of
from lungaudit.training.random_labels import RANDOM_LABELS_JSON, permuted

runner = CliRunner()


@pytest.fixture(scope="module")
def sanity_run(tiny_run, tmp_path_factory: pytest.TempPathFactory):
    """One sanity run of two methods on the tiny run (trains the 1-epoch random-label model once)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("sanity") / "s"
    return la.sanity(tiny_run.run_dir, methods="gradcam,saliency", n_images=3, random_epochs=1, out_dir=out, device="cpu")


def test_outputs_and_verdicts_follow_the_threshold(sanity_run) -> None:
    doc = json.loads(sanity_run.json_path.read_text())
    assert set(doc["methods"]) == {"gradcam", "saliency"} and sanity_run.n_images == 3 and len(doc["images"]) == 3
    for name, rec in doc["methods"].items():
        mr, dr = rec["model_randomization"], rec["data_randomization"]
        assert mr["layers"] == ["fc", "layer4", "layer3", "layer2", "layer1", "bn1", "conv1"]  # head first
        assert len(mr["mean_spearman"]) == len(mr["layers"]) and mr["spearman"] == mr["mean_spearman"][-1]
        for test in (mr, dr):
            assert test["verdict"] == ("fail" if test["spearman"] > 0.5 else "pass")
        assert rec["verdict"] == verdict_of(mr["verdict"], dr["verdict"]) and rec["kind"] == method_info(name).kind
    assert doc["random_labels"]["epochs"] == 1 and doc["random_labels"]["val_accuracy_true_labels"] is not None
    out = sanity_run.out_dir
    assert (out / "sanity.png").is_file() and (out / "sanity_maps.png").is_file()
    assert (out / "random_labels" / "weights" / "cls_best.pt").is_file() and (out / "random_labels" / RANDOM_LABELS_JSON).is_file()


def test_cli_reuses_the_random_label_model_and_prints_the_table(tiny_run, sanity_run, tmp_path: Path) -> None:
    res = runner.invoke(app, ["sanity", str(tiny_run.run_dir), "-m", "gradcam", "-n", "2", "--random-model", str(sanity_run.out_dir),
                              "--project", str(tmp_path), "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "gradcam" in res.output and ("PASS" in res.output or "FAIL" in res.output or "UNDEFINED" in res.output)
    doc = json.loads((tmp_path / "sanity" / "exp" / "sanity.json").read_text())
    assert not (tmp_path / "sanity" / "exp" / "random_labels").exists()  # reused, not retrained
    assert doc["random_labels"]["epochs"] == 1


def test_bad_input_is_exit_2(tiny_run, tmp_path: Path) -> None:
    for args in (["-m", "nope"], ["-o", "lime.n_sample=3"], ["--split", "holdout"]):
        res = runner.invoke(app, ["sanity", str(tiny_run.run_dir), *args, "--project", str(tmp_path), "--device", "cpu"])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    res = runner.invoke(app, ["sanity", str(tmp_path / "no_run"), "--project", str(tmp_path)])
    assert res.exit_code == 2 and "no_run" in res.output


def test_pick_images_spreads_over_classes_and_permutation_keeps_counts() -> None:
    samples = [Sample(Path(f"{c}{i}.png"), label=c) for c in "AB" for i in range(5)] + [Sample(Path("C0.png"), label="C")]
    picked = pick_images(samples, 5, seed=0)
    assert len(picked) == 5 and {s.label for s in picked} == {"A", "B", "C"}
    assert pick_images(samples, 5, seed=0) == picked and len(pick_images(samples, 50, 0)) == len(samples)
    y = np.array([0, 0, 1, 2, 2, 2])
    assert sorted(permuted(y, 3)) == sorted(y) and not np.array_equal(permuted(np.arange(50), 3), np.arange(50))
    assert verdict_of("pass", "fail") == "fail" and verdict_of("pass", "pass") == "pass" and verdict_of("pass", "undefined") == "undefined"


def test_recorded_verdicts_reach_method_info(monkeypatch) -> None:
    data = {"source": {"model": "resnet18", "images": "16 test images", "date": "2026-01-01"},
            "methods": {"saliency": {"verdict": "fail", "model_randomization": {"spearman": 0.71, "verdict": "fail"},
                                     "data_randomization": {"spearman": 0.2, "verdict": "pass"}},
                        "not_a_method": {"verdict": "pass"}}}  # fmt: skip
    cls = CAM_METHODS.get("saliency")
    monkeypatch.setattr(cls, "info", cls.info)  # restored after the test
    assert apply_verdicts(data) == ["saliency"]
    info = method_info("saliency")
    assert info.sanity == "fail" and "0.71 (fail)" in info.sanity_note and "16 test images" in info.sanity_note
    assert verdict_note({}, {}) == ""


def test_the_packaged_verdicts_are_measurements_of_registered_methods(tmp_path: Path) -> None:
    data = load_verdicts(packaged_verdicts())
    for name, rec in data.get("methods", {}).items():
        assert name in CAM_METHODS and rec["verdict"] in VERDICTS
        assert rec["model_randomization"]["spearman"] is not None  # a verdict without its number is not recorded
        assert method_info(name).sanity == rec["verdict"]
    if data.get("methods"):
        assert data["source"]["run"] and data["source"]["date"] and data["source"]["images"]
    (tmp_path / "bad.json").write_text("{not json")
    assert load_verdicts(tmp_path / "bad.json") == {}
    unmeasured = [m for m in CAM_METHODS.names() if m not in data.get("methods", {})]
    assert all(method_info(m).sanity is None for m in unmeasured)


def test_info_is_frozen_metadata() -> None:
    info = method_info("gradcam")
    with pytest.raises(Exception):
        info.sanity = "pass"  # type: ignore[misc]
    assert replace(info, sanity="pass").sanity == "pass"
