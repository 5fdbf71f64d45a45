"""A copy of a run's classifier trained on permuted labels: the model of Adebayo et al.'s data-randomisation test.

Same architecture, input normalisation, masking mix and recipe as the run (its ``config.yaml``), same
training and validation images, but every label shuffled (a seeded permutation within each split), so
nothing the model learns can be the class. An explanation method whose maps for this model still
look like those for the run's explains the input, not what the model learnt. Usually a few epochs
(``epochs``), since the point is a model of the same kind without the signal, not a memorised one.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lungaudit.data.arrays import load_arrays
from lungaudit.data.split import class_weights
from lungaudit.runs.data import run_config, run_dataset
from lungaudit.runs.restore import load_run, restore
from lungaudit.runs.rundir import MetricsLog
from lungaudit.training.callbacks import TrainCallback
from lungaudit.training.cls import cls_stage, predict_probs
from lungaudit.training.evaluate import fill_missing_masks, labels_of
from lungaudit.training.loop import run_stage
from lungaudit.utils import atomic_write_json, seed_everything

RANDOM_LABELS_JSON = "random_labels.json"


def permuted(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation of ``labels``: the same class counts, no link to the images."""
    return labels[np.random.default_rng(seed).permutation(len(labels))]


def train_random_label_classifier(
    run_dir: Path,
    out_dir: Path,
    *,
    epochs: int = 3,
    seed: int = 0,
    device: torch.device | None = None,
    callback: TrainCallback | None = None,
) -> torch.nn.Module:
    """Train the run's classifier anew on permuted labels into ``out_dir/weights``; returns it (eval mode).

    ``out_dir/random_labels.json`` records the recipe and the accuracy on the *true* validation
    labels (near chance when the permutation did its job). Raises ``ValueError`` when the run's data
    cannot be read (its ``run.json`` names it).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    cfg = run_config(run_dir)
    dev = device or torch.device("cpu")
    models = load_run(run_dir, dev)
    seed_everything(seed)
    dataset = run_dataset(run_dir, run_cfg=cfg)
    names = list(models.class_names)
    labelled = [s for s in dataset.samples if s.label in names]
    tr_samples, va_samples = [s for s in labelled if s.split == "train"], [s for s in labelled if s.split == "val"]
    if not tr_samples:
        raise ValueError(f"{run_dir}: the run's training split has no labelled image to permute")
    size, seg_size = models.cls_cfg.image_size, models.seg_cfg.image_size if models.seg_cfg else 0
    tr, va = load_arrays(tr_samples, size, max_pixels=cfg.data.max_pixels), load_arrays(va_samples, size, max_pixels=cfg.data.max_pixels)
    tr_masks = fill_missing_masks(tr, models.segmenter, seg_size, "training")
    va_masks = fill_missing_masks(va, models.segmenter, seg_size, "validation")
    y_tr, y_va = labels_of(tr.samples, names), labels_of(va.samples, names)
    cls_cfg = replace(models.cls_cfg, epochs=epochs, patience=0, min_epochs=0, pretrained=False, weights="")
    spec = cls_stage(cls_cfg, names, tr.images, tr_masks, permuted(y_tr, seed), va.images, va_masks, permuted(y_va, seed + 1),
                     class_weights(tr_samples, names), seed, dev, cfg.data.num_workers)  # fmt: skip
    out_dir = Path(out_dir)
    ckpt = run_stage(spec, out_dir / "weights", MetricsLog(out_dir / "metrics.csv"), dev, callback or TrainCallback())
    model = restore(ckpt, dev)
    atomic_write_json(out_dir / RANDOM_LABELS_JSON, _record(run_dir, cls_cfg.epochs, seed, model, va.images, y_va, len(tr_samples)))
    return model


def _record(
    run_dir: Path, epochs: int, seed: int, model: torch.nn.Module, val_images: np.ndarray, val_labels: np.ndarray, n_train: int
) -> dict[str, Any]:  # fmt: skip
    acc = float((predict_probs(model, val_images, 64).argmax(1) == val_labels).mean()) if len(val_labels) else None
    return {
        "run": str(run_dir),
        "recipe": "the run's cls config, from scratch, labels permuted within train and within val (seeded)",
        "epochs": epochs,
        "seed": seed,
        "n_train": n_train,
        "val_accuracy_true_labels": acc,
        "chance": float(np.bincount(val_labels).max() / len(val_labels)) if len(val_labels) else None,
    }


__all__ = ["RANDOM_LABELS_JSON", "permuted", "train_random_label_classifier"]
