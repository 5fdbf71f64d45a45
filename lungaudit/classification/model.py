"""Classifier builders: torchvision ResNets with a 1-channel stem, registered by name."""

from __future__ import annotations

import logging

import torch
import torchvision
from torch import nn

from lungaudit.config import ClsConfig
from lungaudit.registry import Registry

log = logging.getLogger(__name__)

CLASSIFIERS: Registry = Registry("classifier architecture")


def _adapt(model: torchvision.models.ResNet, num_classes: int, output_stride: int) -> nn.Module:
    old = model.conv1
    conv1 = nn.Conv2d(1, old.out_channels, kernel_size=7, stride=2, padding=3, bias=False)
    with torch.no_grad():
        # Summing the RGB kernels keeps pretrained filters meaningful for grayscale input.
        conv1.weight.copy_(old.weight.sum(dim=1, keepdim=True))
    model.conv1 = conv1
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    if output_stride == 16:
        # Stride 1 in layer4 doubles the Grad-CAM grid (8x8 at 128 px instead of 4x4): corner markers
        # and lung fields then fall in different CAM cells instead of sharing one coarse cell.
        block = model.layer4[0]
        strided_conv = block.conv2 if isinstance(block, torchvision.models.resnet.Bottleneck) else block.conv1
        strided_conv.stride = (1, 1)
        block.downsample[0].stride = (1, 1)
    elif output_stride != 32:
        raise ValueError(f"cls.output_stride must be 16 or 32, got {output_stride}")
    return model


def _resnet(name: str, cfg: ClsConfig, num_classes: int) -> nn.Module:
    weights = None
    if cfg.pretrained:
        weights = "DEFAULT"
    try:
        model = getattr(torchvision.models, name)(weights=weights)
    except Exception as e:  # network errors surface as URLError/OSError/RuntimeError depending on version
        raise RuntimeError(
            f"could not download ImageNet weights for {name} ({e.__class__.__name__}: {e}); "
            "this machine may be offline: train from scratch without --pretrained"
        ) from None
    return _adapt(model, num_classes, cfg.output_stride)


@CLASSIFIERS.register("resnet18")
def resnet18(cfg: ClsConfig, num_classes: int) -> nn.Module:
    return _resnet("resnet18", cfg, num_classes)


@CLASSIFIERS.register("resnet34")
def resnet34(cfg: ClsConfig, num_classes: int) -> nn.Module:
    return _resnet("resnet34", cfg, num_classes)


@CLASSIFIERS.register("resnet50")
def resnet50(cfg: ClsConfig, num_classes: int) -> nn.Module:
    return _resnet("resnet50", cfg, num_classes)


def build_classifier(cfg: ClsConfig, num_classes: int) -> nn.Module:
    """A ResNet taking (N, 1, H, W) float input in [0, 1] and returning (N, num_classes) logits."""
    return CLASSIFIERS.get(cfg.arch)(cfg, num_classes)
