"""Tiny training configs shared by the pipeline and audit tests (64 px, 1-2 epochs, small U-Net)."""

from __future__ import annotations

from pathlib import Path

from lungaudit.config import TrainConfig, apply_overrides


def tiny_config(root: Path, project: Path, *extra: str) -> TrainConfig:
    return apply_overrides(
        TrainConfig(),
        [
            f"data.root={root}",
            f"project={project}",
            "device=cpu",
            "seg.image_size=64",
            "seg.encoder_depth=3",
            "seg.decoder_channels=[16,8,4]",
            "seg.epochs=1",
            "seg.batch_size=8",
            "seg.max_train_images=16",
            "cls.image_size=64",
            "cls.epochs=2",
            "cls.batch_size=8",
            "cls.patience=0",
            "cls.min_epoch_steps=0",
            *extra,
        ],
    )
