"""Lung segmenter builders (segmentation-models-pytorch), registered by name."""

from __future__ import annotations

import segmentation_models_pytorch as smp
from torch import nn

from lungaudit.config import SegConfig
from lungaudit.registry import Registry

SEGMENTERS: Registry = Registry("segmenter architecture")


@SEGMENTERS.register("unet")
def unet(cfg: SegConfig) -> nn.Module:
    try:
        return smp.Unet(
            encoder_name=cfg.encoder,
            encoder_weights="imagenet" if cfg.pretrained else None,
            encoder_depth=cfg.encoder_depth,
            decoder_channels=tuple(cfg.decoder_channels),
            in_channels=1,
            classes=1,
        )
    except (OSError, RuntimeError, ConnectionError) as e:
        if not cfg.pretrained:
            raise
        raise RuntimeError(
            f"could not download ImageNet weights for encoder {cfg.encoder!r} ({e.__class__.__name__}: {e}); "
            "this machine may be offline: train from scratch without --pretrained, or start from a local "
            "state dict or run with --weights PATH"
        ) from None


def encoder_names() -> list[str]:
    """The encoder names ``seg.encoder`` accepts (segmentation-models-pytorch's own list)."""
    return sorted(smp.encoders.get_encoder_names())


def build_segmenter(cfg: SegConfig) -> nn.Module:
    """A U-Net taking (N, 1, H, W) in [0, 1] and returning (N, 1, H, W) lung logits."""
    if len(cfg.decoder_channels) != cfg.encoder_depth:
        raise ValueError(
            f"seg.decoder_channels has {len(cfg.decoder_channels)} entries but seg.encoder_depth is "
            f"{cfg.encoder_depth}; they must match"
        )
    return SEGMENTERS.get(cfg.arch)(cfg)
