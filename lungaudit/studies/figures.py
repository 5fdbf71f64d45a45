"""The studies' pictures (matplotlib, headless): explanation panels, sanity curves, feature views.

Every figure is drawn from plain numpy arrays and written atomically as PNG; nothing here computes
a number that a JSON file does not also hold.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lungaudit.utils import atomic_write_bytes  # noqa: E402

LUNG_COLOUR = "#39ff14"


def save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _outline(ax: Any, mask: np.ndarray) -> None:
    if mask.any() and not mask.all():
        ax.contour(mask.astype(float), levels=[0.5], colors=LUNG_COLOUR, linewidths=1.0)


def explain_panel(
    image: np.ndarray, lungs: np.ndarray, maps: dict[str, np.ndarray], titles: dict[str, str], heading: str, path: Path
) -> None:
    """One row: the image, the image with its lung outline, then each method's map over the image.

    ``image`` (S, S) in [0, 1]; ``lungs`` (S, S) bool; ``maps`` {method: (S, S) >= 0}, each scaled to
    its own maximum for display (the numbers in ``titles`` are the scale-free energy shares).
    """
    n = 2 + len(maps)
    fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 2.75), squeeze=False)
    axes = axes[0]
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(image, cmap="gray", vmin=0, vmax=1)
    _outline(axes[1], lungs)
    axes[1].set_title(titles.get("__lungs__", "lungs"), fontsize=9)
    for ax, (name, heat) in zip(axes[2:], maps.items()):
        top = float(heat.max())
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.imshow(heat / top if top > 0 else heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        _outline(ax, lungs)
        ax.set_title(titles.get(name, name), fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(heading, fontsize=9, y=1.02)
    save_figure(fig, path)


def sanity_curves(curves: dict[str, dict[str, Any]], data: dict[str, float | None], threshold: float, path: Path) -> None:
    """Left: each method's mean Spearman to the trained maps as layers are randomised, head first
    (Adebayo et al. fig. 2). Right: the same correlation against the random-label model."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [2.2, 1]})
    layers: list[str] = []
    for i, (name, c) in enumerate(curves.items()):
        layers = ["none", *c["layers"]]
        y = [1.0, *[np.nan if v is None else v for v in c["mean_spearman"]]]
        ax.plot(range(len(y)), y, marker="o", ms=3, lw=1.4, color=plt.cm.tab20(i % 20), label=name)
    ax.axhline(threshold, ls="--", color="k", lw=1)
    ax.set_xticks(range(len(layers)), ["none", *[f"+{l}" for l in layers[1:]]], rotation=35, ha="right", fontsize=8)
    ax.set_ylim(-0.25, 1.05)
    ax.set_ylabel("Spearman rank correlation with the trained model's maps")
    ax.set_title("cascading model-parameter randomisation (head first)", fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    names = list(data)
    vals = [np.nan if data[n] is None else data[n] for n in names]
    bars = bx.barh(range(len(names)), vals, color=[plt.cm.tab20(i % 20) for i in range(len(names))])
    bx.bar_label(bars, labels=["n/a" if np.isnan(v) else f"{v:.2f}" for v in vals], fontsize=7, padding=2)
    bx.axvline(threshold, ls="--", color="k", lw=1)
    bx.set_yticks(range(len(names)), names, fontsize=8)
    bx.invert_yaxis()
    bx.set_xlim(-0.25, 1.0)
    bx.set_title("data randomisation: trained vs\nrandom-label model", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def sanity_maps(image: np.ndarray, rows: dict[str, Sequence[np.ndarray]], columns: Sequence[str], path: Path) -> None:
    """One image's maps per method (rows) for the trained, randomised and random-label models (columns)."""
    fig, axes = plt.subplots(len(rows), 1 + len(columns), figsize=(1.7 * (1 + len(columns)), 1.7 * len(rows)), squeeze=False)
    for r, (name, maps) in enumerate(rows.items()):
        axes[r, 0].imshow(image, cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_ylabel(name, fontsize=8)
        for c, heat in enumerate(maps, start=1):
            top = float(heat.max())
            axes[r, c].imshow(heat / top if top > 0 else heat, cmap="magma", vmin=0, vmax=1)
    for c, title in enumerate(["image", *columns]):
        axes[0, c].set_title(title, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def scatter_grid(panels: list[tuple[str, np.ndarray, Sequence[str]]], path: Path, ncols: int = 2) -> None:
    """Scatter plots of (N, 2) embeddings coloured by a categorical label, one per panel."""
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.4 * nrows), squeeze=False)
    for ax, (title, xy, labels) in zip(axes.ravel(), panels):
        cats = sorted(set(labels))
        for i, cat in enumerate(cats):
            sel = np.array([lab == cat for lab in labels])
            ax.scatter(xy[sel, 0], xy[sel, 1], s=12, alpha=0.8, color=plt.cm.tab10(i % 10), label=cat)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, markerscale=1.5, loc="best")
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)


def filter_grid(weights: np.ndarray, path: Path, title: str) -> None:
    """(K, C, kh, kw) convolution kernels (channels averaged), each scaled to its own range."""
    k = weights.mean(1)
    n = len(k)
    cols = int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(0.8 * cols, 0.8 * rows + 0.4), squeeze=False)
    for ax, w in zip(axes.ravel(), k):
        ax.imshow(w, cmap="gray", vmin=float(w.min()), vmax=float(w.max()) if w.max() > w.min() else float(w.min()) + 1)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def activation_grid(rows: dict[str, tuple[list[np.ndarray], list[str], list[np.ndarray], list[str]]], k: int, path: Path) -> None:
    """Per class (row): the ``k`` most activating images, then the ``k`` least, with their captions."""
    fig, axes = plt.subplots(len(rows), 2 * k, figsize=(1.45 * 2 * k, 1.7 * len(rows)), squeeze=False)
    for r, (cls, (top, top_caps, low, low_caps)) in enumerate(rows.items()):
        for c in range(2 * k):
            ax = axes[r, c]
            ax.axis("off")
            pool, caps, j = (top, top_caps, c) if c < k else (low, low_caps, c - k)
            if j < len(pool):
                ax.imshow(pool[j], cmap="gray", vmin=0, vmax=1)
                ax.set_title(caps[j], fontsize=6)
        axes[r, 0].text(-0.15, 0.5, cls, transform=axes[r, 0].transAxes, rotation=90, ha="right", va="center", fontsize=8)
    fig.suptitle(f"per class: the {k} most (left) and {k} least (right) activating images (class logit)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


__all__ = ["activation_grid", "explain_panel", "filter_grid", "sanity_curves", "sanity_maps", "save_figure", "scatter_grid"]
