"""``lungaudit export``: ONNX and TorchScript files that reproduce the run, with their input contract."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import lungaudit as la
import lungaudit.cli.cmd_serve  # noqa: F401  (registers the command)
from lungaudit.cli.app import app
from lungaudit.data.imageio import read_image
from lungaudit.runs.checkpoint import load_checkpoint, save_checkpoint
from lungaudit.runs.restore import load_run
from lungaudit.services import export as export_mod
from lungaudit.services.export import CONTRACT, ExportError, parity_inputs, radiograph_like
from lungaudit.utils import sha256_file

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load/trace are deprecated in torch >= 2.9


def _real_batch(paths: list[Path], size: int) -> np.ndarray:
    return np.stack([cv2.resize(read_image(p), (size, size), interpolation=cv2.INTER_AREA) for p in paths])[:, None]


@pytest.fixture(scope="module")
def exported(tiny_run, test_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    return la.export(tiny_run.run_dir, out, formats=["onnx", "torchscript"], parity_images=test_images)


def test_files_and_contract(exported, tiny_run):
    c = json.loads((exported.out_dir / CONTRACT).read_text())
    assert c == exported.contract and sorted(c["formats"]) == ["onnx", "torchscript"]
    models = load_run(tiny_run.run_dir, torch.device("cpu"))
    cls = c["models"]["classifier"]
    assert cls["output"]["class_names"] == list(models.class_names)
    assert cls["input"]["shape"] == ["batch", 1, 64, 64] and cls["input"]["range"] == [0.0, 1.0] and cls["input"]["channels"] == 1
    assert cls["input"]["normalisation"].startswith("none")
    assert cls["checkpoint"]["sha256"] == sha256_file(tiny_run.run_dir / "weights" / "cls_best.pt")
    assert c["models"]["segmenter"]["checkpoint"]["sha256"] == sha256_file(tiny_run.run_dir / "weights" / "seg_best.pt")
    for name in ("classifier", "segmenter"):
        for fmt, fname in c["models"][name]["files"].items():
            assert sha256_file(exported.out_dir / fname) == c["models"][name]["sha256"][fmt]
        for fmt in c["formats"]:
            report = c["parity"][fmt][name]["inputs"]
            assert set(report) == {"random", "radiograph_like", "real"}
            assert all(v["max_abs_diff"] <= v["limit"] for v in report.values())
    assert "INTER_AREA" in c["preprocessing"] and "MONOCHROME1" in c["preprocessing"]


@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_files_reproduce_the_run(exported, tiny_run, test_images, batch):
    """Independently of export's own check: onnxruntime on the written files, any batch size."""
    import onnxruntime as ort

    models = load_run(tiny_run.run_dir, torch.device("cpu"))
    for name, net, size in (("classifier", models.classifier, 64), ("segmenter", models.segmenter, 64)):
        session = ort.InferenceSession(str(exported.files[name]["onnx"]), providers=["CPUExecutionProvider"])
        x = np.concatenate([_real_batch(test_images, size), parity_inputs(size)["random"]])[:batch].astype(np.float32)
        got = session.run(None, {"image": x})[0]
        with torch.no_grad():
            want = net(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
        if name == "classifier":
            assert (got.argmax(1) == want.argmax(1)).all()


def test_torchscript_files_reproduce_the_run(exported, tiny_run, test_images):
    models = load_run(tiny_run.run_dir, torch.device("cpu"))
    x = torch.from_numpy(np.concatenate([_real_batch(test_images, 64), radiograph_like(64)[None, None]]).astype(np.float32))
    for name, net in (("classifier", models.classifier), ("segmenter", models.segmenter)):
        module = torch.jit.load(str(exported.files[name]["torchscript"]))
        with torch.no_grad():
            torch.testing.assert_close(module(x), net(x), atol=1e-4, rtol=1e-4)


def test_normalisation_inside_the_model_is_exported_and_stated(tiny_run, tmp_path):
    """A classifier whose input normalisation is a forward hook: the files must include it."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir / "weights", run / "weights")
    ckpt_path = run / "weights" / "cls_best.pt"
    ckpt = load_checkpoint(ckpt_path)
    save_checkpoint(replace(ckpt, config={**ckpt.config, "input_norm": "imagenet"}), ckpt_path)
    (run / "weights" / "seg_best.pt").unlink()  # a run without a segmenter exports the classifier alone
    result = la.export(run, tmp_path / "out", formats=["torchscript", "onnx"])
    assert set(result.files) == {"classifier"} and "imagenet" in result.contract["models"]["classifier"]["input"]["normalisation"]
    x = torch.rand(3, 1, 64, 64)
    module = torch.jit.load(str(result.files["classifier"]["torchscript"]))
    net = load_run(run, torch.device("cpu")).classifier
    with torch.no_grad():
        torch.testing.assert_close(module(x), net(x), atol=1e-4, rtol=1e-4)


def test_an_export_that_differs_is_refused(tiny_run, tmp_path, monkeypatch):
    honest = export_mod._RUNNERS["torchscript"]
    monkeypatch.setitem(export_mod._RUNNERS, "torchscript", lambda data: (lambda x: honest(data)(x) + 0.01))
    with pytest.raises(ExportError, match="differ from the run's"):
        la.export(tiny_run.run_dir, tmp_path / "out", formats=["torchscript"])
    assert not (tmp_path / "out" / CONTRACT).exists()


def test_cli(tiny_run, tmp_path):
    out = runner.invoke(app, ["export", "--run", str(tiny_run.run_dir), "--format", "torchscript", "--out", str(tmp_path / "ts")], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "classifier.torchscript.pt" in out.output and (tmp_path / "ts" / CONTRACT).is_file()
    out = runner.invoke(app, ["export", "--run", str(tiny_run.run_dir), "--format", "tflite"])
    assert out.exit_code == 2 and "onnx, torchscript" in out.output
    out = runner.invoke(app, ["export", "--run", str(tmp_path / "nothing"), "--format", "onnx"])
    assert out.exit_code == 2 and "no classifier checkpoint" in " ".join(out.output.split())
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    out = runner.invoke(app, ["export", "--run", str(tiny_run.run_dir), "--format", "torchscript", "--out", str(tmp_path / "x"), "--parity-image", str(bad)])
    assert out.exit_code == 2 and "parity image" in " ".join(out.output.split())
