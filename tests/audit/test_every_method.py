"""Registry-driven: every explanation method can drive the audit (``audit.cam: <name>``), with options."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from lungaudit.audit.loader import DecodeSpec, audit_loader, valid_boxes
from lungaudit.audit.metrics import lung_energy, remove_floor
from lungaudit.audit.step import KIND_FLOORS, StepSettings, audit_step, resolve_floor
from lungaudit.cli.main import app
from lungaudit.config import AuditConfig, ConfigError, TrainConfig, apply_overrides
from lungaudit.data.layouts import load_dataset
from lungaudit.explain.cam import CAM_METHODS, compute_cam, method_info
from lungaudit.runs.restore import load_run

# Small options keep the expensive methods to a few forwards per image on the 64 px tiny run.
FAST = {"scorecam": {"top_k": 4}, "smoothgrad": {"n_samples": 2}, "integrated_gradients": {"n_steps": 2},
        "occlusion": {"window": 32}, "lime": {"n_samples": 8}}  # fmt: skip


@pytest.fixture(scope="module")
def batch(tiny_synth, tiny_run):
    """The tiny run's models and one decoded test batch, as the audit decodes it."""
    torch.set_num_threads(1)
    models = load_run(tiny_run.run_dir, torch.device("cpu"))
    samples = load_dataset(tiny_synth).split("test")[:4]
    b = next(iter(audit_loader(samples, DecodeSpec(64, True, 512), 4, 0, pin=False)))
    return models, b


@pytest.mark.parametrize("method", CAM_METHODS.names())
def test_every_method_drives_the_audit_step(batch, method: str) -> None:
    models, b = batch
    cfg = AuditConfig(cam=method, cam_options=FAST.get(method, {}))
    s = StepSettings.resolve(cfg, models)
    assert s.cam == method and s.cam_options == FAST.get(method, {})
    assert s.cam_floor == KIND_FLOORS[method_info(method).kind]  # auto resolves by the method's kind
    r = audit_step(models, b["image"], b["mask"], b["has_mask"], valid_boxes(b["boxes"]), s)
    assert r.heat.shape == (4, 64, 64) and bool((r.heat >= 0).all())
    # the step measured exactly the floored map of that method with those options
    cams = compute_cam(models.classifier, b["image"], "layer4", method=method, out_size=(64, 64), score=cfg.cam_score,
                       options=FAST.get(method)).cams  # fmt: skip
    expected = remove_floor(cams) if s.cam_floor == "mean" else cams
    torch.testing.assert_close(r.heat, expected, atol=1e-5, rtol=1e-4)
    e = lung_energy(expected, r.lungs, s.tolerance_px, fill=s.fill_lungs)
    torch.testing.assert_close(r.energy["e_out_tol"], e["e_out_tol"], equal_nan=True, atol=1e-5, rtol=1e-4)


def test_floor_setting_and_options_are_checked_up_front(batch) -> None:
    models, _ = batch
    assert resolve_floor("none", "gradcam") == "none" and resolve_floor("mean", "saliency") == "mean"
    with pytest.raises(ValueError, match="audit.cam_floor"):
        resolve_floor("median", "gradcam")
    with pytest.raises(ValueError, match="audit.cam_options: integrated_gradients takes no option.*n_step"):
        StepSettings.resolve(AuditConfig(cam="integrated_gradients", cam_options={"n_step": 4}), models)
    with pytest.raises(ValueError, match="audit.cam_options: n_steps must be a positive integer"):
        StepSettings.resolve(AuditConfig(cam="integrated_gradients", cam_options={"n_steps": 0}), models)
    with pytest.raises(ValueError, match="audit.cam must be one of"):
        StepSettings.resolve(AuditConfig(cam="nope"), models)


def test_cam_options_from_config_and_overrides() -> None:
    cfg = apply_overrides(TrainConfig(), ["audit.cam=lime", "audit.cam_options.n_samples=32", "audit.cam_options.segments=slic"])
    assert cfg.audit.cam_options == {"n_samples": 32, "segments": "slic"}
    assert apply_overrides(cfg, ["audit.cam_options="]).audit.cam_options == {}
    assert apply_overrides(TrainConfig(), ["audit.cam_options={n_steps: 8}"]).audit.cam_options == {"n_steps": 8}
    with pytest.raises(ConfigError, match="audit.cam_options: expected a mapping"):
        apply_overrides(TrainConfig(), ["audit.cam_options=8"])
    with pytest.raises(ConfigError, match="unknown key 'cam_opt'"):  # new keys only in the declared mapping
        apply_overrides(TrainConfig(), ["audit.cam_opt=8"])


def test_the_audit_cli_runs_another_method_and_records_it(tiny_run, tmp_path) -> None:
    args = ["audit", "--run", str(tiny_run.run_dir), "--split", "test", "--project", str(tmp_path), "--name", "ig",
            "--device", "cpu", "--workers", "0", "--no-report", "--set", "audit.cam=integrated_gradients",
            "--set", "audit.cam_options.n_steps=3"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "audit" / "ig" / "summary.json").read_text())
    assert summary["config"]["cam"] == "integrated_gradients" and summary["config"]["cam_options"] == {"n_steps": 3}
    rows = list(csv.DictReader(open(tmp_path / "audit" / "ig" / "audit.csv")))
    assert rows and all(r["e_in"] or r["no_evidence"] == "true" for r in rows)
    bad = CliRunner().invoke(app, [*args[:-1], "audit.cam_options.n_step=3"])
    assert bad.exit_code == 2 and "n_step" in bad.output and "Traceback" not in bad.output


def test_a_failed_sanity_verdict_warns_when_the_audit_uses_the_method(batch, caplog, monkeypatch) -> None:
    models, _ = batch
    cls = CAM_METHODS.get("saliency")
    monkeypatch.setattr(cls, "info", replace(cls.info, sanity="fail", sanity_note="model randomisation: Spearman 0.80 (fail)"))
    with caplog.at_level("WARNING"):
        StepSettings.resolve(AuditConfig(cam="saliency"), models)
    assert "failed the recorded sanity checks" in caplog.text and "0.80" in caplog.text
