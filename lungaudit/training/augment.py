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
    """Rotation, scale, shift, brightness, contrast and gamma; horizontal flip only when the config asks."""
    # Passed only when asked for: even a zero range changes the random stream, and with it every run.
    shift = {"translate_percent": (-cfg.translate, cfg.translate)} if cfg.translate > 0 else {}
    transforms: list = [
        A.Affine(
            scale=(1 - cfg.scale, 1 + cfg.scale),
            rotate=(-cfg.rotate_deg, cfg.rotate_deg),
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=0,
            p=0.9,
            **shift,
        ),
        A.RandomBrightnessContrast(brightness_limit=cfg.brightness, contrast_limit=cfg.contrast, p=0.8),
    ]
    if cfg.gamma > 0:
        # Real films differ in exposure curve (detector, processing), not only in level and contrast.
        transforms.append(A.RandomGamma(gamma_limit=(100 * (1 - cfg.gamma), 100 * (1 + cfg.gamma)), p=0.5))
    if cfg.hflip:
        transforms.append(A.HorizontalFlip(p=0.5))
    return A.Compose(transforms)
