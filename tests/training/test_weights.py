"""Starting weights (cls.weights / seg.weights / --weights) and the input normalisation they expect."""

import pytest
import torch

from lungaudit.classification.model import INPUT_NORMS, build_classifier, resolve_input_norm
from lungaudit.config import ClsConfig, SegConfig, from_dict, to_dict
from lungaudit.segmentation.model import build_segmenter
from lungaudit.runs.checkpoint import Checkpoint, save_checkpoint
from lungaudit.runs.restore import restore
from lungaudit.training.weights import WeightsError, input_norm_of, read_weights, start_from, weights_for_stage

CFG = ClsConfig(image_size=64)
SEG = SegConfig(image_size=64, encoder_depth=3, decoder_channels=(16, 8, 4))


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _checkpoint(path, model, cfg=CFG, classes=("Normal", "TB"), kind="cls"):
    save_checkpoint(Checkpoint(kind=kind, config=to_dict(cfg), class_names=list(classes),
                               model_state=model.state_dict(), epoch=1, best_metric=0.5), path)
    return path


def test_plain_state_dict_loads_including_wrapped_and_dataparallel(tmp_path):
    torch.manual_seed(0)
    source = build_classifier(CFG, 2)
    for name, payload in (("plain", source.state_dict()),
                          ("wrapped", {"state_dict": source.state_dict()}),
                          ("ddp", {f"module.{k}": v for k, v in source.state_dict().items()})):
        torch.save(payload, tmp_path / f"{name}.pt")
        torch.manual_seed(1)
        model = build_classifier(CFG, 2)
        init = start_from(model, tmp_path / f"{name}.pt", "cls")
        assert _same(model, source) and init.source == "state_dict" and init.kept_fresh == []
        assert len(init.sha256) == 64


def test_run_folder_and_checkpoint_load_and_carry_their_normalisation(tmp_path):
    source = build_classifier(replace_norm("imagenet"), 2)
    (tmp_path / "run" / "weights").mkdir(parents=True)
    _checkpoint(tmp_path / "run" / "weights" / "cls_best.pt", source, replace_norm("imagenet"))
    for where in (tmp_path / "run", tmp_path / "run" / "weights", tmp_path / "run" / "weights" / "cls_best.pt"):
        model = build_classifier(CFG, 2)
        init = start_from(model, where, "cls")
        assert _same(model, source) and init.source == "checkpoint" and init.class_names == ["Normal", "TB"]
        assert input_norm_of(init) == "imagenet"


def replace_norm(norm: str) -> ClsConfig:
    return from_dict(ClsConfig, {**to_dict(CFG), "input_norm": norm})


def test_other_head_and_rgb_stem_are_adapted(tmp_path):
    """An ImageNet-style state dict: 3-channel stem, 1000-class head."""
    import torchvision

    imagenet_like = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(imagenet_like, tmp_path / "resnet18.pth")
    model = build_classifier(ClsConfig(image_size=64, output_stride=32), 2)
    init = start_from(model, tmp_path / "resnet18.pth", "cls")
    assert init.kept_fresh == ["fc.weight", "fc.bias"] and init.adapted == ["conv1.weight"]
    torch.testing.assert_close(model.conv1.weight, imagenet_like["conv1.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(model.layer1[0].conv1.weight, imagenet_like["layer1.0.conv1.weight"])


def test_mismatched_malformed_and_missing_files_are_refused_by_name(tmp_path):
    torch.save(build_classifier(ClsConfig(arch="resnet34"), 2).state_dict(), tmp_path / "r34.pt")
    with pytest.raises(WeightsError, match=r"r34\.pt does not fit this cls model; keys .*unexpected: layer1\.2"):
        start_from(build_classifier(CFG, 2), tmp_path / "r34.pt", "cls")
    state = build_classifier(CFG, 2).state_dict()
    state["layer2.0.conv1.weight"] = torch.zeros(3, 3)
    del state["layer3.0.bn1.weight"]
    torch.save(state, tmp_path / "bent.pt")
    with pytest.raises(WeightsError, match=r"bent\.pt .*1 of another shape: layer2\.0\.conv1\.weight \(3, 3\).*1 missing: layer3\.0\.bn1\.weight"):
        start_from(build_classifier(CFG, 2), tmp_path / "bent.pt", "cls")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match=r"junk\.pt cannot be loaded safely"):
        read_weights(tmp_path / "junk.pt", "cls")
    torch.save({"epoch": 3, "note": "no tensors"}, tmp_path / "dict.pt")
    with pytest.raises(WeightsError, match=r"dict\.pt is neither a lungaudit checkpoint nor a state dict"):
        read_weights(tmp_path / "dict.pt", "cls")
    with pytest.raises(WeightsError, match=r"nowhere\.pt does not exist"):
        read_weights(tmp_path / "nowhere.pt", "cls")
    _checkpoint(tmp_path / "seg.pt", build_segmenter(SEG), SEG, ("lung",), kind="seg")
    with pytest.raises(WeightsError, match=r"seg\.pt is a 'seg' checkpoint, expected 'cls'"):
        read_weights(tmp_path / "seg.pt", "cls")
    with pytest.raises(WeightsError, match="without a cls checkpoint"):
        read_weights(tmp_path, "cls")


def test_segmenter_from_checkpoint_and_from_a_bare_encoder(tmp_path):
    source = build_segmenter(SEG)
    _checkpoint(tmp_path / "seg.pt", source, SEG, ("lung",), kind="seg")
    model = build_segmenter(SEG)
    start_from(model, tmp_path / "seg.pt", "seg")
    assert _same(model, source)
    encoder = {k[len("encoder."):]: v for k, v in source.state_dict().items() if k.startswith("encoder.")}
    torch.save(encoder, tmp_path / "encoder.pt")
    model = build_segmenter(SEG)
    init = start_from(model, tmp_path / "encoder.pt", "seg")
    assert torch.equal(model.encoder.conv1.weight, source.encoder.conv1.weight)
    assert init.kept_fresh and all(k.startswith(("decoder.", "segmentation_head.")) for k in init.kept_fresh)


def test_input_norm_round_trip_through_a_checkpoint(tmp_path):
    cfg = replace_norm("imagenet")
    model = build_classifier(cfg, 2).eval()
    mean, std = INPUT_NORMS["imagenet"]
    bare = build_classifier(CFG, 2).eval()
    bare.load_state_dict(model.state_dict())  # the normalisation adds nothing to the state dict
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), bare((x - mean) / std))
        _checkpoint(tmp_path / "cls.pt", model, cfg)
        from lungaudit.runs.checkpoint import load_checkpoint

        rebuilt = restore(load_checkpoint(tmp_path / "cls.pt"), torch.device("cpu"))
        torch.testing.assert_close(rebuilt(x), model(x))
        assert rebuilt.input_norm.name == "imagenet"


def test_auto_norm_follows_the_starting_weights():
    assert resolve_input_norm(CFG) == "none"  # from scratch
    assert resolve_input_norm(ClsConfig(pretrained=True)) == "imagenet"
    assert resolve_input_norm(ClsConfig(weights="x.pth")) == "imagenet"  # a foreign state dict
    assert resolve_input_norm(ClsConfig(weights="run"), "none") == "none"  # a lungaudit run says
    assert resolve_input_norm(ClsConfig(weights="x.pth", input_norm="none")) == "none"  # explicit wins
    with pytest.raises(ValueError, match="input_norm"):
        build_classifier(replace_norm("zscore"), 2)


def test_weights_option_routes_to_the_right_stage(tmp_path):
    (tmp_path / "run" / "weights").mkdir(parents=True)
    _checkpoint(tmp_path / "run" / "weights" / "cls_best.pt", build_classifier(CFG, 2))
    _checkpoint(tmp_path / "run" / "weights" / "seg_best.pt", build_segmenter(SEG), SEG, ("lung",), kind="seg")
    run = str(tmp_path / "run")
    assert weights_for_stage(run, "all") == {"seg": run, "cls": run}
    assert weights_for_stage(run, "cls") == {"cls": run}
    ckpt = str(tmp_path / "run" / "weights" / "seg_best.pt")
    assert weights_for_stage(ckpt, "all") == {"seg": ckpt}
    with pytest.raises(WeightsError, match="does not train that model"):
        weights_for_stage(ckpt, "cls")
    torch.save(build_classifier(CFG, 2).state_dict(), tmp_path / "plain.pt")
    with pytest.raises(WeightsError, match="--stage cls or --stage seg"):
        weights_for_stage(tmp_path / "plain.pt", "all")
    assert weights_for_stage(tmp_path / "plain.pt", "cls") == {"cls": str(tmp_path / "plain.pt")}


def test_training_starts_from_a_previous_run(tiny_run, tmp_path):
    """The pipeline: --stage cls from a run's classifier; the new run records it and its normalisation."""
    from lungaudit.runs.checkpoint import load_checkpoint
    from lungaudit.training.pipeline import train
    from pipeline_helpers import tiny_config

    cfg = tiny_config(tiny_run.test_metrics["dataset"], tmp_path, "cls.epochs=1", f"cls.weights={tiny_run.run_dir}", "cls.lr=1e-12")
    result = train(cfg, stage="cls")
    init = result.test_metrics["cls_init_weights"]
    assert init["source"] == "checkpoint" and init["path"].endswith("cls_best.pt") and init["kept_fresh"] == []
    before = load_checkpoint(tiny_run.run_dir / "weights" / "cls_best.pt").model_state
    after = load_checkpoint(result.run_dir / "weights" / "cls_best.pt")
    assert after.config["input_norm"] == "none"  # the run it started from trained without normalisation
    assert torch.allclose(after.model_state["layer1.0.conv1.weight"], before["layer1.0.conv1.weight"], atol=1e-6)


def test_cli_weights_option_fails_clearly_naming_the_file(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from lungaudit.cli.main import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--weights", "missing.pt", "--set", f"project={tmp_path}"])
    assert result.exit_code == 2 and "missing.pt does not exist" in result.output
    torch.save(build_classifier(CFG, 2).state_dict(), tmp_path / "plain.pt")
    result = runner.invoke(app, ["train", "--weights", "plain.pt"])
    assert result.exit_code == 2 and "--stage cls" in result.output
