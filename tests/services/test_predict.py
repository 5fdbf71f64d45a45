"""``lungaudit.predict`` and ``lungaudit predict``: the audit's own numbers for single images, bad files named."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

import lungaudit as la
import lungaudit.cli.cmd_predict  # noqa: F401  (registers the command)
from lungaudit.audit.run import audit_dataset
from lungaudit.cli.app import app
from lungaudit.config import AuditConfig
from lungaudit.data.records import Dataset, Sample
from lungaudit.services.predict import VERDICTS, collect_images, energy_verdict, predict_csv_columns

from .conftest import huge_declared_png

runner = CliRunner()


def _flat(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


def test_predict_equals_the_audit_of_the_same_images(tiny_run, test_images, tmp_path):
    """predict runs the audit's step: with the U-Net's masks on both sides, every number agrees."""
    result = la.predict(test_images, run=tiny_run.run_dir, device="cpu")
    assert not result.problems and len(result.predictions) == len(test_images)
    ds = Dataset(root=test_images[0].parents[2], layout="files", samples=[Sample(p) for p in test_images], problems=[], class_names=())
    audited = audit_dataset(ds, tiny_run.run_dir, tmp_path / "a", AuditConfig(predict_masks=True, overlays=False), device="cpu")
    with open(audited.out_dir / "audit.csv", newline="") as f:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    for p in result.predictions:
        a = rows[Path(p.row.path).name]
        assert p.row.pred == a["pred"] and p.row.pred_masked == a["pred_masked"] and p.row.flagged == (a["flagged"] == "true")
        assert p.row.region == (a["region"] or None) and ";".join(p.row.reasons) == a["reasons"]
        assert p.row.e_in == pytest.approx(float(a["e_in"]), abs=1e-4)
        assert p.row.prob_pred == pytest.approx(float(a["prob_pred"]), abs=1e-4)
        assert p.verdict in VERDICTS and p.verdict == energy_verdict(p.row, AuditConfig().out_threshold)
        assert sum(p.row.probs.values()) == pytest.approx(1.0, abs=1e-4) and not p.row.trained_on and p.row.split == "test"


def test_folders_bad_files_and_overlays(tiny_run, test_images, tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(test_images[0], folder / "a.png")
    shutil.copy(test_images[1], folder / "sub" / "b.png")
    (folder / "notes.txt").write_text("not an image, and not picked from a folder")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "huge.png").write_bytes(huge_declared_png())
    result = la.predict([folder, tmp_path / "missing.png"], run=tiny_run.run_dir, device="cpu", overlays=tmp_path / "ov")
    assert sorted(Path(p.row.path).name for p in result.predictions) == ["a.png", "b.png"]
    reasons = {p.path.name: p.reason for p in result.problems}
    assert reasons["missing.png"] == "file not found"
    assert "truncated PNG" in reasons["broken.png"] or "corrupt PNG" in reasons["broken.png"]
    assert "above the cap" in reasons["huge.png"]
    for p in result.predictions:
        picture = cv2.imread(str(tmp_path / "ov" / p.row.overlay))
        assert picture is not None and picture.shape[1] == 320


def test_collect_images_skips_hidden_and_reports_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "imgs" / ".cache").mkdir(parents=True)
    (tmp_path / "imgs" / ".cache" / "x.png").write_bytes(b"x")
    (tmp_path / "imgs" / "y.dcm").write_bytes(b"x")
    paths, problems = collect_images([tmp_path / "empty", tmp_path / "imgs"])
    assert [p.name for p in paths] == ["y.dcm"]
    assert [p.path.name for p in problems] == ["empty"] and "no image files" in problems[0].reason


def test_cli_table_json_csv(tiny_run, test_images):
    args = ["predict", "--run", str(tiny_run.run_dir), "--device", "cpu", *map(str, test_images[:2])]
    out = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "Predictions" in out.output and "Class probabilities" in out.output and test_images[0].name in out.output

    out = runner.invoke(app, [*args, "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["class_names"] and [Path(p["path"]).name for p in data["predictions"]] == [p.name for p in test_images[:2]]
    first = data["predictions"][0]
    assert {"pred", "probs", "pred_masked", "e_in", "e_out", "region", "flagged", "reasons", "verdict"} <= set(first)

    out = runner.invoke(app, [*args, "--csv"])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert list(rows[0]) == predict_csv_columns(data["class_names"]) and len(rows) == 2
    assert rows[0]["pred"] == first["pred"] and rows[0]["verdict"] == first["verdict"]


def test_cli_bad_files_exit_codes(tiny_run, test_images, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("hello")
    base = ["predict", "--run", str(tiny_run.run_dir), "--device", "cpu"]
    out = runner.invoke(app, [*base, str(bad)])
    assert out.exit_code == 2 and "no image could be predicted" in _flat(out.output) and "not an image" in _flat(out.output)
    assert "Traceback" not in out.output

    out = runner.invoke(app, [*base, str(bad), str(test_images[0]), "--json"])  # partial: exit 0, problem listed
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert len(data["predictions"]) == 1 and data["problems"][0]["path"] == str(bad)

    out = runner.invoke(app, [*base, str(bad), str(test_images[0]), "--strict"])
    assert out.exit_code == 2 and "--strict" in _flat(out.output)

    out = runner.invoke(app, ["predict", "--run", str(tmp_path / "norun"), str(test_images[0])])
    assert out.exit_code == 2 and "no classifier checkpoint" in _flat(out.output)

    out = runner.invoke(app, [*base, str(test_images[0]), "--json", "--csv"])
    assert out.exit_code == 2


def test_a_run_without_a_segmenter_is_refused_up_front(tiny_run, test_images, tmp_path):
    shutil.copytree(tiny_run.run_dir / "weights", tmp_path / "run" / "weights")
    (tmp_path / "run" / "weights" / "seg_best.pt").unlink()
    with pytest.raises(ValueError, match="no lung segmenter"):
        la.predict(test_images[0], run=tmp_path / "run", device="cpu")


@pytest.mark.parametrize("name", ["predict", "serve", "export"])
def test_service_functions_are_public_and_documented(name):
    import inspect

    fn = getattr(la, name)
    assert name in la.__all__ and inspect.isfunction(fn) and (fn.__doc__ or "").strip()


def test_pictures_cost_no_extra_forward_and_change_no_number(predictor, test_images):
    """With pictures, guided Grad-CAM's pass also yields the audited Grad-CAM: the rows are the same
    as without pictures, and the classifier runs no more forwards than the audit alone."""
    from lungaudit.data.records import Sample

    chosen = test_images[:3]
    items, samples, keys = [predictor.decode(p) for p in chosen], [Sample(p) for p in chosen], [p.name for p in chosen]
    forwards: list[int] = []
    hook = predictor.models.classifier.register_forward_hook(lambda *_: forwards.append(1))
    try:
        plain = predictor.run(items, samples, keys, maps=False)
        alone = len(forwards)
        drawn = predictor.run(items, samples, keys, maps=True)
        with_display = len(forwards) - alone
        heat_only = predictor.run(items, samples, keys, maps=True, methods=())  # what predict --overlays draws
    finally:
        hook.remove()
    assert predictor.methods == ("gradcam", "guided_gradcam")
    assert with_display == alone, "the pictures added a classifier forward"
    assert all(m.methods == {} for _, m in heat_only) and [p for p, _ in heat_only] == [p for p, _ in plain]
    for (a, _), (b, maps) in zip(plain, drawn):
        assert a == b
        guided = maps.methods["guided_gradcam"]
        assert guided.shape == maps.heat.shape and (guided >= 0).all() and guided.max() > 0


def test_a_failing_display_method_costs_neither_the_prediction_nor_the_heatmap(predictor, test_images, monkeypatch, caplog):
    """If the shared guided pass fails, the audit computes its own Grad-CAM: same rows, no guided picture."""
    from lungaudit.data.records import Sample
    from lungaudit.services import predict as module

    chosen = test_images[:2]
    items, samples, keys = [predictor.decode(p) for p in chosen], [Sample(p) for p in chosen], [p.name for p in chosen]
    plain = predictor.run(items, samples, keys, maps=False)
    real = module.compute_cam

    def guided_breaks(*args, **kwargs):
        if kwargs.get("method") == "guided_gradcam":
            raise RuntimeError("out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "compute_cam", guided_breaks)
    drawn = predictor.run(items, samples, keys, maps=True)
    assert [p for p, _ in drawn] == [p for p, _ in plain]
    assert all(set(m.methods) == {"gradcam"} and m.heat.max() > 0 for _, m in drawn)
    assert "guided_gradcam failed: RuntimeError: out of memory" in caplog.text
