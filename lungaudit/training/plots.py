"""Run-folder plots (matplotlib, headless): learning curves, confusion matrix, ROC, example masks."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lungaudit.utils import atomic_write_bytes  # noqa: E402


def _save(fig: "plt.Figure", path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def learning_curves(rows: list[dict], path: Path) -> None:
    stages = [s for s in ("seg", "cls") if any(r["stage"] == s for r in rows)]
    if not stages:
        return
    fig, axes = plt.subplots(1, len(stages), figsize=(5.5 * len(stages), 3.8), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        rs = [r for r in rows if r["stage"] == stage]
        epochs = [int(r["epoch"]) for r in rs]
        ax.plot(epochs, [float(r["train_loss"]) for r in rs], "o-", label="train loss")
        ax.set_xlabel("epoch")
        ax.set_title({"seg": "lung segmentation", "cls": "classification"}[stage])
        ax2 = ax.twinx()
        keys = ("val_dice", "val_dice_pp") if stage == "seg" else ("val_macro_f1", "val_macro_f1_masked")
        for k, style in zip(keys, ("s--", "^--")):
            ax2.plot(epochs, [float(r[k]) for r in rs], style, label=k)
        ax2.set_ylim(0, 1)
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="center right", fontsize=8)
    _save(fig, path)


def confusion_matrix_plot(cm: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> None:
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(5, 4.4))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    _save(fig, path)


def roc_plot(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str], path: Path) -> None:
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5, 4.4))
    for c, name in enumerate(class_names):
        pos = y_true == c
        if 0 < pos.sum() < len(y_true):
            fpr, tpr, _ = roc_curve(pos, probs[:, c])
            ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("per-class ROC (test, full image)")
    ax.legend(fontsize=8)
    _save(fig, path)


def mask_examples(images: np.ndarray, true: np.ndarray, pred: np.ndarray, path: Path, n: int = 6) -> None:
    """Images with the given (green) and predicted (red) lung contours."""
    n = min(n, len(images))
    if n == 0:
        return
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.4), squeeze=False)
    for ax, img, t, p in zip(axes[0], images[:n], true[:n], pred[:n]):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.contour(t, levels=[0.5], colors="lime", linewidths=0.8)
        ax.contour(p, levels=[0.5], colors="red", linewidths=0.8)
        ax.axis("off")
    fig.suptitle("lung masks: given (green) vs predicted (red)", fontsize=9)
    _save(fig, path)
