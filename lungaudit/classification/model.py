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

# (mean, std) applied to the [0, 1] grey input inside the model. ImageNet's per-channel statistics
# are averaged over RGB: the 1-channel stem sums the RGB kernels, so a grey film stands in for
# R = G = B (timm does the same for in_chans=1).
INPUT_NORMS: dict[str, tuple[float, float]] = {
    "none": (0.0, 1.0),
    "imagenet": ((0.485 + 0.456 + 0.406) / 3, (0.229 + 0.224 + 0.225) / 3),
}


class InputNorm(nn.Module):
    """``(x - mean) / std`` with non-persistent buffers: it follows ``.to(device)`` but adds nothing
    to the state dict, so weights load the same with or without it."""

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in INPUT_NORMS:
            raise ValueError(f"cls.input_norm must be one of auto, {', '.join(INPUT_NORMS)}; got {name!r}")
        mean, std = INPUT_NORMS[name]
        self.name = name
        self.register_buffer("mean", torch.tensor(mean), persistent=False)
        self.register_buffer("std", torch.tensor(std), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.name}: mean={float(self.mean):.4f}, std={float(self.std):.4f}"


def resolve_input_norm(cfg: ClsConfig, weights_norm: str | None = None) -> str:
    """The normalisation a model built from ``cfg`` needs; ``auto`` follows the weights it starts from.

    ``weights_norm`` is what the starting weights were trained with, when known (a lungaudit
    checkpoint stores it). Otherwise ``auto`` means: ImageNet statistics for ImageNet weights
    (``pretrained``) and for foreign state dicts (torchvision and timm ResNets all expect them),
    none when training from scratch.
    """
    if cfg.input_norm != "auto":
        return cfg.input_norm
    if weights_norm is not None:
        return weights_norm
    return "imagenet" if cfg.pretrained or cfg.weights else "none"


def attach_input_norm(model: nn.Module, name: str) -> nn.Module:
    """Normalise every input of ``model`` in its own forward (a pre-hook), so training, the audit,
    prediction and export all feed it what its weights expect without knowing about it."""
    if name == "none":
        return model
    model.input_norm = InputNorm(name)
    model.register_forward_pre_hook(lambda m, args: (m.input_norm(args[0]), *args[1:]))
    return model


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
            "this machine may be offline: train from scratch without --pretrained, or start from a local "
            "state dict or run with --weights PATH"
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
    """A ResNet taking (N, 1, H, W) float input in [0, 1] and returning (N, num_classes) logits.

    The input normalisation ``cfg.input_norm`` (resolved, see :func:`resolve_input_norm`) is part of
    the model, so whoever rebuilds it from a checkpoint's config gets the same normalisation.
    """
    model = CLASSIFIERS.get(cfg.arch)(cfg, num_classes)
    return attach_input_norm(model, resolve_input_norm(cfg))
