"""Albumentations pipelines for the two stages."""

from __future__ import annotations

import albumentations as A
import cv2

from lungaudit.config import ClsConfig


def seg_augment() -> A.Compose:
    """Joint image+mask geometry plus intensity jitter; masks use nearest-neighbour warping."""
    return A.Compose(
        [
            A.Affine(
                scale=(0.9, 1.1),
                translate_percent=(-0.05, 0.05),
                rotate=(-10, 10),
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=0.8,
            ),
            A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.8),
            A.RandomGamma(gamma_limit=(80, 125), p=0.5),
        ]
    )


def cls_augment(cfg: ClsConfig) -> A.Compose:
    """Rotation, scale, brightness and contrast; horizontal flip only when the config asks."""
    transforms: list = [
        A.Affine(
            scale=(1 - cfg.scale, 1 + cfg.scale),
            rotate=(-cfg.rotate_deg, cfg.rotate_deg),
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=0,
            p=0.9,
        ),
        A.RandomBrightnessContrast(brightness_limit=cfg.brightness, contrast_limit=cfg.contrast, p=0.8),
    ]
    if cfg.hflip:
        transforms.append(A.HorizontalFlip(p=0.5))
    return A.Compose(transforms)
