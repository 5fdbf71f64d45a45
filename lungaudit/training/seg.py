"""Stage 1: the U-Net lung segmenter (Dice + BCE, joint augmentation, MONAI Dice/IoU)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss
from torch import nn

from lungaudit.config import SegConfig, to_dict
from lungaudit.segmentation.metrics import dice_iou
from lungaudit.segmentation.model import build_segmenter
from lungaudit.segmentation.postprocess import postprocess_mask
from lungaudit.segmentation.predict import predict_logits
from lungaudit.data.arrays import Arrays
from lungaudit.data.lazy import RowView, take_rows
from lungaudit.training.augment import seg_augment
from lungaudit.device import to_device
from lungaudit.training.loop import EpochSeededDataset, Stage, batches, train_loader

SEG_MODEL_KEYS = ("arch", "encoder", "encoder_depth", "decoder_channels", "image_size")


class SegDataset(EpochSeededDataset):
    """(image, mask) pairs as (1, S, S) float tensors, jointly augmented when ``augment``."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, augment: bool, seed: int) -> None:
        self.masks = masks
        super().__init__(images, seg_augment() if augment else None, seed)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.images[i], self.masks[i]
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = np.clip(out["image"], 0, 1), out["mask"]
        return torch.from_numpy(np.ascontiguousarray(image))[None], torch.from_numpy(np.ascontiguousarray(mask))[None].float()


EVAL_CHUNK_BATCHES = 64  # batches evaluated at a time: bounds memory on large splits


def seg_metrics(model: nn.Module, images: np.ndarray | RowView, masks: np.ndarray | RowView, batch_size: int) -> dict[str, float]:
    """Mean Dice/IoU at model resolution, raw and after OpenCV post-processing.

    Per-image scores are computed a chunk of whole batches at a time (the same batches, so the same
    figures, as all at once) and averaged at the end.
    """
    if len(images) == 0:
        return {"dice": float("nan"), "iou": float("nan"), "dice_pp": float("nan"), "iou_pp": float("nan"), "score": float("nan")}
    parts: list[tuple[torch.Tensor, ...]] = []
    for sl in batches(len(images), batch_size * EVAL_CHUNK_BATCHES):
        logits = predict_logits(model, torch.from_numpy(np.asarray(images[sl])[:, None]), batch_size)
        pred = (logits > 0).cpu()
        target = torch.from_numpy(np.asarray(masks[sl])[:, None].astype(bool))
        pp = torch.from_numpy(np.stack([postprocess_mask(p) for p in pred[:, 0].numpy()]))[:, None]
        parts.append((*dice_iou(pred, target), *dice_iou(pp, target)))
    dice, iou, dice_pp, iou_pp = (torch.cat(x) for x in zip(*parts))
    return {
        "dice": dice.mean().item(),
        "iou": iou.mean().item(),
        "dice_pp": dice_pp.mean().item(),
        "iou_pp": iou_pp.mean().item(),
        "score": dice_pp.mean().item(),
    }


def seg_stage(cfg: SegConfig, train: Arrays, val: Arrays, seed: int, device: torch.device, num_workers: int = 0) -> Stage:
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(train.has_mask)
    if len(idx) == 0:
        raise ValueError("no training image has a lung mask: the segmenter cannot be trained")
    if cfg.max_train_images and len(idx) > cfg.max_train_images:
        idx = np.sort(rng.choice(idx, cfg.max_train_images, replace=False))
    dataset = SegDataset(take_rows(train.images, idx), take_rows(train.masks, idx), augment=True, seed=seed)
    loader = train_loader(dataset, cfg.batch_size, seed, device, num_workers)
    dice_loss = DiceLoss(mode="binary", from_logits=True)

    def loss_fn(model: nn.Module, batch, dev: torch.device):
        x, y = to_device(batch[0], dev), to_device(batch[1], dev)
        logits = model(x).float()
        return dice_loss(logits, y) + F.binary_cross_entropy_with_logits(logits, y), {}

    vi = np.flatnonzero(val.has_mask)
    val_images, val_masks = take_rows(val.images, vi), take_rows(val.masks, vi)
    return Stage(
        kind="seg",
        model=build_segmenter(cfg),
        config=to_dict(cfg),
        model_keys=SEG_MODEL_KEYS,
        class_names=["lung"],
        loader=loader,
        loss_fn=loss_fn,
        evaluate=lambda m: seg_metrics(m, val_images, val_masks, cfg.batch_size * 2),
        epochs=cfg.epochs,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        patience=0,
    )
