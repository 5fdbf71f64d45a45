"""``lungaudit explain``: panels and explain.json, masks given or predicted, numbers equal to the audit's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import pytest
import torch
from typer.testing import CliRunner

import lungaudit as la
from lungaudit.audit.metrics import lung_energy, remove_floor
from lungaudit.cli.main import app
from lungaudit.data.imageio import read_image, read_mask
from lungaudit.data.layouts import load_dataset
from lungaudit.explain.cam import compute_cam
from lungaudit.runs.restore import load_run
from lungaudit.studies.common import resolve_methods

runner = CliRunner()
METHODS = "gradcam,saliency,occlusion"
FAST = ["-o", "occlusion.window=32"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def inputs(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A data-set image (given mask), the same pixels outside any data set (U-Net mask), and a broken file."""
    folder = tmp_path_factory.mktemp("loose")
    sample = load_dataset(tiny_synth).split("test")[0]
    shutil.copyfile(sample.path, folder / "loose.png")
    (folder / "broken.png").write_bytes(b"not a png at all")
    return {"known": sample.path, "mask": sample.mask_path, "loose": folder / "loose.png", "broken": folder / "broken.png",
            "folder": folder}  # fmt: skip


def _explain(tiny_run, tmp_path: Path, *args: str):
    return runner.invoke(app, ["explain", "--run", str(tiny_run.run_dir), "--project", str(tmp_path), "--device", "cpu",
                               "--methods", METHODS, *FAST, *args])  # fmt: skip


def test_panels_json_and_the_numbers_are_the_audits(tiny_run, inputs, tmp_path: Path) -> None:
    res = _explain(tiny_run, tmp_path, str(inputs["known"]), str(inputs["loose"]), str(inputs["broken"]))
    assert res.exit_code == 0, res.output
    out = tmp_path / "explain" / "exp"
    doc = json.loads((out / "explain.json").read_text())
    assert [Path(r["path"]).name for r in doc["images"]] == [inputs["known"].name, "loose.png"]
    assert [r["mask"] for r in doc["images"]] == ["given", "predicted"]  # its data set's mask; else the U-Net's
    assert doc["images"][0]["label"] and doc["images"][1]["label"] is None
    assert [p["path"] for p in doc["problems"]] == [str(inputs["broken"])] and "broken.png" in res.output
    assert all((out / r["panel"]).is_file() for r in doc["images"])
    assert set(doc["images"][0]["methods"]) == {"gradcam", "saliency", "occlusion"}
    # E_in in the JSON is lung_energy of the same (floored) map, on the same mask, with the audit's band
    rec, models = doc["images"][0], load_run(tiny_run.run_dir, torch.device("cpu"))
    image = read_image(inputs["known"])
    x = torch.from_numpy(cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA))[None, None]
    mask = cv2.resize(read_mask(inputs["mask"], image.shape).astype("uint8"), (64, 64), interpolation=cv2.INTER_NEAREST)
    for method in ("gradcam", "saliency"):
        cams = compute_cam(models.classifier, x, "layer4", method=method, score="logprob").cams
        heat = remove_floor(cams) if rec["methods"][method]["floor"] == "mean" else cams
        e = lung_energy(heat, torch.from_numpy(mask)[None].bool(), 8 * 64 // 128, fill=True)  # the packaged audit.fill_lungs
        assert rec["methods"][method]["e_in"] == pytest.approx(float(e["e_in"][0]), abs=1e-5)
        assert rec["methods"][method]["e_out_tol"] == pytest.approx(float(e["e_out_tol"][0]), abs=1e-5)
    assert rec["pred"] == models.class_names[int(models.classifier(x).argmax())]


def test_a_folder_a_target_class_and_the_api(tiny_run, inputs, tmp_path: Path) -> None:
    result = la.explain(inputs["folder"], tiny_run.run_dir, methods=["gradcam", "ig"], target="Normal",
                        options={"integrated_gradients": {"n_steps": 2}}, out_dir=tmp_path / "x", device="cpu")  # fmt: skip
    assert [Path(r["path"]).name for r in result.images] == ["loose.png"]  # the broken one is a problem
    assert result.images[0]["target"] == "Normal" and list(result.images[0]["methods"]) == ["gradcam", "integrated_gradients"]
    assert [p.path.name for p in result.problems] == ["broken.png"]
    assert result.json_path.is_file()


def test_a_refused_file_is_named_literally(tiny_run, tmp_path: Path) -> None:
    """The refusal line is plain text: a name with brackets is printed as it is, with no markup leaking."""
    bad = tmp_path / "[red]$(rm -rf x).png"
    bad.write_bytes(b"not an image")
    res = _explain(tiny_run, tmp_path, str(bad))
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert f"refused: {bad}: not an image" in res.output.replace("\n", "")
    assert "[yellow]" not in res.output and "\\[" not in res.output


def test_nothing_explainable_is_exit_2_and_writes_nothing(tiny_run, inputs, tmp_path: Path) -> None:
    res = _explain(tiny_run, tmp_path, str(inputs["broken"]), str(tmp_path / "missing.png"))
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "broken.png" in res.output and "missing.png" in res.output and "none of the 2 input(s)" in res.output
    assert not (tmp_path / "explain").exists()
    for bad in (["--methods", "gradcam,nope"], ["-o", "occlusion.windw=3"], ["--target", "Martian"], []):
        res = _explain(tiny_run, tmp_path, *bad, *([str(inputs["known"])] if bad else []))
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert not (tmp_path / "explain").exists()


def test_list_shows_every_method_with_its_sanity_verdict() -> None:
    res = runner.invoke(app, ["explain", "--list"])
    assert res.exit_code == 0
    for name in resolve_methods("all"):
        assert name[:8] in res.output
    assert resolve_methods("ig,gradcam,ig") == ["integrated_gradients", "gradcam"]
