"""Stage 2: the classifier, trained on a mix of lung-masked and unmasked inputs."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lungaudit.classification.metrics import macro_f1
from lungaudit.classification.model import build_classifier
from lungaudit.config import ClsConfig, to_dict
from lungaudit.data.arrays import apply_lung_mask, dilate
from lungaudit.training.augment import cls_augment
from lungaudit.device import autocast, to_device
from lungaudit.training.loop import EpochSeededDataset, Stage, batches, train_loader

CLS_MODEL_KEYS = ("arch", "image_size", "output_stride")


class ClsDataset(EpochSeededDataset):
    """Items are (image (1, S, S), label, masked flag).

    Whether an item is lung-masked is drawn from a generator seeded by (seed, epoch, index), so it
    is reproducible and independent of worker scheduling. ``masks`` must already be dilated.
    """

    def __init__(
        self, images: np.ndarray, masks: np.ndarray, labels: np.ndarray, cfg: ClsConfig, seed: int, augment: bool = True
    ) -> None:
        self.masks, self.labels = masks, labels
        self.mask_prob, self.fill_value = cfg.mask_prob, cfg.fill_value
        super().__init__(images, cls_augment(cfg) if augment else None, seed)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, bool]:
        masked = bool(np.random.default_rng([self.seed, self.epoch, i]).random() < self.mask_prob)
        image = apply_lung_mask(self.images[i], self.masks[i], self.fill_value) if masked else self.images[i]
        if self.transform is not None:
            image = np.clip(self.transform(image=image)["image"], 0, 1)
        return torch.from_numpy(np.ascontiguousarray(image))[None], int(self.labels[i]), masked


@torch.no_grad()
def predict_probs(model: nn.Module, images: np.ndarray, batch_size: int) -> np.ndarray:
    """(N, S, S) float images -> (N, C) softmax probabilities."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    for sl in batches(len(images), batch_size):
        x = to_device(torch.from_numpy(images[sl][:, None]), device)
        with autocast(device):
            out.append(torch.softmax(model(x).float(), 1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def masked_images(images: np.ndarray, masks: np.ndarray, cfg: ClsConfig) -> np.ndarray:
    return apply_lung_mask(images, dilate(masks, cfg.mask_dilate_px), cfg.fill_value)


def cls_stage(
    cfg: ClsConfig,
    class_names: list[str],
    train_images: np.ndarray,
    train_masks: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_masks: np.ndarray,
    val_labels: np.ndarray,
    class_weights: np.ndarray,
    seed: int,
    device: torch.device,
    num_workers: int = 0,
) -> Stage:
    dataset = ClsDataset(train_images, dilate(train_masks, cfg.mask_dilate_px), train_labels, cfg, seed)
    loader = train_loader(dataset, cfg.batch_size, seed, device, num_workers)
    weight = torch.as_tensor(class_weights, dtype=torch.float32, device=device)
    val_masked = masked_images(val_images, val_masks, cfg)

    def loss_fn(model: nn.Module, batch, dev: torch.device):
        x, y, masked = to_device(batch[0], dev), batch[1].to(dev), batch[2]
        loss = F.cross_entropy(model(x).float(), y, weight=weight)
        return loss, {"masked_frac": float(masked.float().mean())}

    def evaluate(model: nn.Module) -> dict[str, float]:
        n = len(class_names)
        full = predict_probs(model, val_images, cfg.batch_size * 2).argmax(1)
        masked = predict_probs(model, val_masked, cfg.batch_size * 2).argmax(1)
        f1_full, f1_masked = macro_f1(val_labels, full, n), macro_f1(val_labels, masked, n)
        # Selecting on full-image F1 alone would reward shortcut learning, because the validation
        # split carries the training split's shortcut correlation; the masked half keeps it honest.
        return {
            "acc": float((full == val_labels).mean()),
            "acc_masked": float((masked == val_labels).mean()),
            "macro_f1": f1_full,
            "macro_f1_masked": f1_masked,
            "score": 0.5 * (f1_full + f1_masked),
        }

    return Stage(
        kind="cls",
        model=build_classifier(cfg, len(class_names)),
        config=to_dict(cfg),
        model_keys=CLS_MODEL_KEYS,
        class_names=list(class_names),
        loader=loader,
        loss_fn=loss_fn,
        evaluate=evaluate,
        epochs=cfg.epochs,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        patience=cfg.patience,
    )
