"""Classification metrics as small pure functions over numpy arrays.

Shapes: ``y_true`` and ``y_pred`` are (N,) int class indices, ``probs`` is (N, C) rows summing to 1.
"""

from __future__ import annotations

import numpy as np


def _check(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> None:
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must be equal 1-D shapes")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} holds class indices outside [0, {num_classes})")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    _check(y_true, y_pred, num_classes)
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def per_class_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    """One-vs-rest sensitivity, specificity, PPV, NPV and F1 per class from a confusion matrix.

    A ratio with a zero denominator is NaN (undefined), never 0.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fn = cm.sum(1) - tp
    fp = cm.sum(0) - tp
    tn = cm.sum() - tp - fn - fp
    sens = _ratio(tp, tp + fn)
    ppv = _ratio(tp, tp + fp)
    return {
        "sensitivity": sens,
        "specificity": _ratio(tn, tn + fp),
        "ppv": ppv,
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Mean F1 over the classes present in ``y_true`` or ``y_pred``."""
    f1 = per_class_metrics(confusion_matrix(y_true, y_pred, num_classes))["f1"]
    return float(np.nanmean(f1)) if np.isfinite(f1).any() else float("nan")


def roc_auc_per_class(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """One-vs-rest ROC-AUC per class (NaN for a class absent or alone in ``y_true``)."""
    from sklearn.metrics import roc_auc_score

    y_true = np.asarray(y_true)
    out = np.full(probs.shape[1], np.nan)
    for c in range(probs.shape[1]):
        positives = y_true == c
        if 0 < positives.sum() < len(y_true):
            out[c] = roc_auc_score(positives, probs[:, c])
    return out


def classification_report(
    y_true: np.ndarray, probs: np.ndarray, class_names: tuple[str, ...] | list[str]
) -> dict:
    """Accuracy, macro-F1, macro ROC-AUC, confusion matrix and per-class metrics, JSON-ready."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (len(y_true), len(class_names)):
        raise ValueError(f"probs must be (N={len(y_true)}, C={len(class_names)}), got {probs.shape}")
    y_pred = probs.argmax(1)
    cm = confusion_matrix(y_true, y_pred, len(class_names))
    pcm = per_class_metrics(cm)
    auc = roc_auc_per_class(y_true, probs)

    def clean(x: float) -> float | None:
        return None if not np.isfinite(x) else float(x)

    return {
        "n": int(len(y_true)),
        "accuracy": clean(float((y_pred == y_true).mean())) if len(y_true) else None,
        "macro_f1": clean(float(np.nanmean(pcm["f1"]))) if np.isfinite(pcm["f1"]).any() else None,
        "macro_auc": clean(float(np.nanmean(auc))) if np.isfinite(auc).any() else None,
        "confusion": cm.tolist(),
        "per_class": {
            name: {**{k: clean(v[i]) for k, v in pcm.items()}, "auc": clean(auc[i])}
            for i, name in enumerate(class_names)
        },
    }
