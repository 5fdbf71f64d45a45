import pickle

import pytest
import torch

from lungaudit.config import ClsConfig, to_dict
from lungaudit.runs.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from lungaudit.runs.restore import restore
from lungaudit.classification.model import build_classifier

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]


def _ckpt(model):
    return Checkpoint(kind="cls", config=to_dict(ClsConfig(image_size=64)), class_names=CLASSES,
                      model_state=model.state_dict(), epoch=3, best_metric=0.7)


def test_round_trip_rebuilds_the_same_model(tmp_path):
    model = build_classifier(ClsConfig(), 4).eval()
    save_checkpoint(_ckpt(model), tmp_path / "cls.pt")
    ck = load_checkpoint(tmp_path / "cls.pt", kind="cls", class_names=CLASSES)
    assert ck.epoch == 3 and ck.class_names == CLASSES and ck.version
    rebuilt = restore(ck, torch.device("cpu"))
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_mismatches_are_refused_with_reason(tmp_path):
    model = build_classifier(ClsConfig(), 4)
    save_checkpoint(_ckpt(model), tmp_path / "cls.pt")
    with pytest.raises(CheckpointError, match="expected 'seg'"):
        load_checkpoint(tmp_path / "cls.pt", kind="seg")
    with pytest.raises(CheckpointError, match="trained for classes"):
        load_checkpoint(tmp_path / "cls.pt", class_names=["a", "b"])
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_foreign_and_malicious_files_are_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a lungaudit checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "trunc.pt").write_bytes((tmp_path / "foreign.pt").read_bytes()[:50])
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(tmp_path / "trunc.pt")


def test_weights_that_do_not_fit_their_config_are_refused(tmp_path):
    model = build_classifier(ClsConfig(arch="resnet18"), 4)
    ck = _ckpt(model)
    ck.config["arch"] = "resnet34"
    save_checkpoint(ck, tmp_path / "cls.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        restore(load_checkpoint(tmp_path / "cls.pt"), torch.device("cpu"))
