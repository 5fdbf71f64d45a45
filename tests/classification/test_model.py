import urllib.error

import pytest
import torch

from lungaudit.classification.model import CLASSIFIERS, build_classifier
from lungaudit.config import ClsConfig, SegConfig
from lungaudit.segmentation.model import SEGMENTERS, build_segmenter

RESNETS = [n for n in CLASSIFIERS.names() if n.startswith("resnet")]


@pytest.mark.parametrize("arch", RESNETS)
@pytest.mark.parametrize("stride,grid", [(16, 4), (32, 2)])
def test_classifier_shapes(arch, stride, grid):
    model = build_classifier(ClsConfig(arch=arch, output_stride=stride), 4).eval()
    seen = {}
    model.layer4.register_forward_hook(lambda m, i, o: seen.update(shape=o.shape))
    with torch.no_grad():
        out = model(torch.rand(2, 1, 64, 64))
    assert out.shape == (2, 4)
    assert seen["shape"][-2:] == (grid, grid)


def test_unknown_arch_lists_valid_names():
    with pytest.raises(KeyError, match="resnet18"):
        build_classifier(ClsConfig(arch="vgg"), 4)


@pytest.mark.parametrize("arch", SEGMENTERS.names())
def test_segmenter_any_registered(arch):
    cfg = SegConfig(arch=arch, encoder_depth=3, decoder_channels=(16, 8, 4))
    assert build_segmenter(cfg)(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)
    with pytest.raises(ValueError, match="decoder_channels"):
        build_segmenter(SegConfig(arch=arch, encoder_depth=4, decoder_channels=(16, 8)))


def test_pretrained_offline_fails_clearly(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="offline: train from scratch without --pretrained"):
        build_classifier(ClsConfig(pretrained=True), 4)
