"""Stage 2: the classifier, trained on a mix of lung-masked and unmasked inputs."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lungaudit.classification.metrics import macro_f1, roc_auc_per_class
from lungaudit.classification.model import build_classifier
from lungaudit.config import ClsConfig, to_dict
from lungaudit.data.arrays import apply_lung_mask, dilate
from lungaudit.training.augment import cls_augment
from lungaudit.device import autocast, to_device
from lungaudit.training.loop import EpochSeededDataset, Stage, batches, train_loader
from lungaudit.training.sampling import BALANCE_MODES, EpochSampler

CLS_MODEL_KEYS = ("arch", "image_size", "output_stride")


SELECT_METRICS: tuple[str, ...] = ("auc", "f1")


class ClsDataset(EpochSeededDataset):
    """Items are (image (1, S, S), label, masked flag).

    Whether an item is lung-masked is drawn from a generator seeded by (seed, epoch, index), so it
    is reproducible and independent of worker scheduling. ``masks`` must already be dilated.
    An index may be virtual (``repeat * n + i``, see :class:`EpochSampler`): it reads image
    ``i`` and seeds the masking draw, so the repeats of an image within an epoch differ.
    """

    def __init__(
        self, images: np.ndarray, masks: np.ndarray, labels: np.ndarray, cfg: ClsConfig, seed: int, augment: bool = True
    ) -> None:
        self.masks, self.labels = masks, labels
        self.mask_prob, self.fill_value = cfg.mask_prob, cfg.fill_value
        super().__init__(images, cls_augment(cfg) if augment else None, seed)

    def __getitem__(self, v: int) -> tuple[torch.Tensor, int, bool]:
        i = v % len(self.images)
        masked = bool(np.random.default_rng([self.seed, self.epoch, v]).random() < self.mask_prob)
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


def validation_scores(labels: np.ndarray, probs_full: np.ndarray, probs_masked: np.ndarray, select: str) -> dict[str, float]:
    """Validation metrics and the selection ``score`` from (N, C) probabilities, full and masked.

    The score averages the full and the masked view: selecting on full images alone would reward
    shortcut learning, because the validation split carries the training split's shortcut
    correlation; the masked half keeps it honest. ROC-AUC (macro one-vs-rest) is the default
    because on a few dozen validation images macro-F1 moves in big steps with every flipped case
    and sits at its floor until the decision threshold settles, while AUC ranks the cases and shows
    learning from the first epochs.
    """
    n = probs_full.shape[1]
    full, masked = probs_full.argmax(1), probs_masked.argmax(1)
    out = {
        "acc": float((full == labels).mean()),
        "acc_masked": float((masked == labels).mean()),
        "macro_f1": macro_f1(labels, full, n),
        "macro_f1_masked": macro_f1(labels, masked, n),
        "auc": _nanmean(roc_auc_per_class(labels, probs_full)),
        "auc_masked": _nanmean(roc_auc_per_class(labels, probs_masked)),
    }
    key = {"auc": ("auc", "auc_masked"), "f1": ("macro_f1", "macro_f1_masked")}[select]
    out["score"] = 0.5 * (out[key[0]] + out[key[1]])
    return out


def chance_score(select: str, num_classes: int) -> float:
    """The selection score of a model that has learnt nothing: AUC 0.5; macro-F1 about 1 / C."""
    return 0.5 if select == "auc" else 1.0 / num_classes


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


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
    """The classifier stage: data, loss and validation for :func:`~lungaudit.training.loop.run_stage`.

    ``class_weights`` (C,) weigh the loss only when ``cfg.balance == "weights"``; ``"sampler"``
    balances the draws instead (weighting as well would correct twice).
    """
    _check_choices(cfg)
    dataset = ClsDataset(train_images, dilate(train_masks, cfg.mask_dilate_px), train_labels, cfg, seed)
    sampler = EpochSampler(train_labels, cfg.batch_size, cfg.min_epoch_steps, cfg.balance == "sampler", seed)
    loader = train_loader(dataset, cfg.batch_size, seed, device, num_workers, sampler=sampler)
    weight = torch.as_tensor(class_weights, dtype=torch.float32, device=device) if cfg.balance == "weights" else None
    val_masked = masked_images(val_images, val_masks, cfg)

    def loss_fn(model: nn.Module, batch, dev: torch.device):
        x, y, masked = to_device(batch[0], dev), batch[1].to(dev), batch[2]
        loss = F.cross_entropy(model(x).float(), y, weight=weight, label_smoothing=cfg.label_smoothing)
        return loss, {"masked_frac": float(masked.float().mean())}

    def evaluate(model: nn.Module) -> dict[str, float]:
        full = predict_probs(model, val_images, cfg.batch_size * 2)
        masked = predict_probs(model, val_masked, cfg.batch_size * 2)
        return validation_scores(val_labels, full, masked, cfg.select_metric)

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
        chance=chance_score(cfg.select_metric, len(class_names)),
        stop_margin=cfg.stop_margin,
        min_epochs=cfg.min_epochs,
    )


def _check_choices(cfg: ClsConfig) -> None:
    for key, value, valid in (("balance", cfg.balance, BALANCE_MODES), ("select_metric", cfg.select_metric, SELECT_METRICS)):
        if value not in valid:
            raise ValueError(f"cls.{key} must be one of {', '.join(valid)}, got {value!r}")
