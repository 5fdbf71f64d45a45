"""``lungaudit features``: what the classifier's features encode, on full and on lung-masked images.

For a run and a data set (default: the run's own test split): the penultimate features of every image,
full and lung-masked (the gate the classifier was trained with); 2-D embeddings of both (PCA, t-SNE,
optionally kernel PCA) coloured by class and by source; the first-layer filters; the ``k`` images that
most and least activate each class (its logit); and the source-leakage probe -- how well a linear
classifier tells an image's source from its features, full vs masked, against chance. Outputs in
``out_dir``: PNG figures, ``embeddings.csv``, ``activations.csv``, ``features.json`` and a standalone
``features.html`` that shows them all (an audit report may link it).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from lungaudit.data.records import Problem, Sample
from lungaudit.explain.features import embed_2d, penultimate_features, source_leakage_probe
from lungaudit.runs.data import run_dataset
from lungaudit.studies.common import Decoded, RunContext, StudyInputError, decode_samples, device_batch, gated, pick_images
from lungaudit.studies.features_html import write_features_html
from lungaudit.studies.figures import activation_grid, filter_grid, scatter_grid
from lungaudit.utils import atomic_write_json, atomic_write_text

FEATURES_JSON = "features.json"
FEATURES_HTML = "features.html"
EMBEDDINGS = ("pca", "tsne", "kpca")
VIEWS = ("full", "masked")


@dataclass
class FeaturesResult:
    """``probe``: {"full": ..., "masked": ...} leakage-probe records (or ``available: False`` and why)."""

    out_dir: Path
    n_images: int
    probe: dict[str, Any]
    files: list[str]
    problems: list[Problem] = field(default_factory=list)

    @property
    def html_path(self) -> Path:
        return self.out_dir / FEATURES_HTML


@dataclass
class _Features:
    samples: list[Sample]
    images: np.ndarray  # (N, S, S) for the activation thumbnails
    full: np.ndarray  # (N, D)
    masked: np.ndarray  # (N, D)
    logits: np.ndarray  # (N, C)


def study_samples(ctx: RunContext, data: Any, layout: str | None, split: str | None, max_images: int | None, seed: int) -> list[Sample]:
    """The images to study: ``split`` None means the run's test split for its own data, else all of ``data``."""
    if split is None:
        split = "test" if data is None else "all"
    dataset = run_dataset(ctx.run_dir, data, layout, ctx.cfg, None if split == "all" else split, validate=False)
    samples = dataset.samples
    if max_images is not None and len(samples) > max_images:
        samples = pick_images(samples, max_images, seed)
    return samples


def extract(ctx: RunContext, d: Decoded, layer: str, progress: Callable[[int, int], None] | None) -> _Features:
    """Penultimate features (full and masked) and logits, batched on the device."""
    full, masked, logits = [], [], []
    bs = ctx.cfg.audit.batch_size
    model = ctx.models.classifier
    for start in range(0, len(d.samples), bs):
        x, lungs, _ = device_batch(ctx, d, slice(start, start + bs))
        full.append(penultimate_features(model, x, layer, batch=bs).cpu())
        masked.append(penultimate_features(model, gated(ctx, x, lungs), layer, batch=bs).cpu())
        with torch.no_grad():
            logits.append(model(x).float().cpu())
        if progress is not None:
            progress(min(start + bs, len(d.samples)), len(d.samples))
    return _Features(d.samples, d.images, torch.cat(full).numpy(), torch.cat(masked).numpy(), torch.cat(logits).numpy())


def run_features(
    ctx: RunContext,
    out_dir: Path,
    data: Any = None,
    layout: str | None = None,
    split: str | None = None,
    k: int = 5,
    embeddings: Sequence[str] = ("pca", "tsne"),
    layer: str = "avgpool",
    n_splits: int = 5,
    max_images: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> FeaturesResult:
    """Everything in the module doc for ``data`` (default the run's own) and ``split``; see :func:`study_samples`.

    Raises ``ValueError`` for an unknown embedding or a bad ``k``, and :class:`StudyInputError` when
    fewer than 3 images can be read (an embedding needs 3).
    """
    bad = [e for e in embeddings if e not in EMBEDDINGS]
    if bad or not embeddings or k < 1:
        raise ValueError(f"embeddings must be among {', '.join(EMBEDDINGS)} and k >= 1, got {list(embeddings)} and k={k}")
    samples = study_samples(ctx, data, layout, split, max_images, seed)
    decoded = decode_samples(samples, ctx.size, ctx.cfg.data.max_pixels, ctx.can_segment)
    if len(decoded.samples) < 3:
        raise StudyInputError(f"only {len(decoded.samples)} of {len(samples)} image(s) could be read; the views need at least 3", decoded.problems)
    f = extract(ctx, decoded, layer, progress)
    files = _embeddings(f, list(embeddings), seed, out_dir)
    files += _filters(ctx.models.classifier, out_dir) + _activations(f, list(ctx.models.class_names), k, out_dir)
    probe = {view: leakage(getattr(f, view), [s.source for s in f.samples], n_splits, seed) for view in VIEWS}
    doc = _document(ctx, f, probe, files, decoded.problems, layer, list(embeddings), k)
    atomic_write_json(out_dir / FEATURES_JSON, doc)
    write_features_html(out_dir / FEATURES_HTML, doc)
    return FeaturesResult(out_dir, len(f.samples), probe, [*files, FEATURES_JSON, FEATURES_HTML], decoded.problems)


def leakage(features: np.ndarray, sources: Sequence[str | None], n_splits: int, seed: int) -> dict[str, Any]:
    """The source-leakage probe on the images with a known source, or why it cannot run."""
    known = [i for i, s in enumerate(sources) if s]
    names, counts = np.unique([sources[i] for i in known], return_counts=True) if known else (np.array([]), np.array([]))
    if len(names) < 2:
        return {"available": False, "reason": f"needs images from at least 2 sources, found {len(names)}"}
    folds = min(n_splits, int(counts.min()))
    if folds < 2:
        return {"available": False, "reason": f"every source needs at least 2 images; counts {dict(zip(names.tolist(), counts.tolist()))}"}
    p = source_leakage_probe(features[known], [sources[i] for i in known], n_splits=folds, seed=seed)
    return {"available": True, "accuracy": p.accuracy, "accuracy_std": p.accuracy_std, "balanced_accuracy": p.balanced_accuracy,
            "chance": p.chance, "balanced_chance": p.balanced_chance, "lift": p.lift, "n_splits": p.n_splits,
            "n_samples": p.n_samples, "sources": list(p.sources)}  # fmt: skip


def _labels(f: _Features, attr: str) -> list[str]:
    return [getattr(s, attr) or "unknown" for s in f.samples]


def _embeddings(f: _Features, methods: list[str], seed: int, out_dir: Path) -> list[str]:
    """One figure per embedding method (full/masked x by class/by source) and one CSV of all points."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "path", "label", "source", "view", "method", "x", "y"])
    files = []
    classes, sources = _labels(f, "label"), _labels(f, "source")
    for method in methods:
        panels = []
        for view in VIEWS:
            xy = embed_2d(getattr(f, view), method, seed)  # type: ignore[arg-type]
            panels += [(f"{method}, {view} image, by class", xy, classes), (f"{method}, {view} image, by source", xy, sources)]
            for i, (s, (x, y)) in enumerate(zip(f.samples, xy)):
                w.writerow([i, s.path, s.label or "", s.source or "", view, method, f"{x:.6g}", f"{y:.6g}"])
        scatter_grid(panels, out_dir / f"embedding_{method}.png")
        files.append(f"embedding_{method}.png")
    atomic_write_text(out_dir / "embeddings.csv", buf.getvalue())
    return [*files, "embeddings.csv"]


def _filters(model: nn.Module, out_dir: Path) -> list[str]:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        return []
    k = tuple(conv.weight.shape)
    filter_grid(conv.weight.detach().float().cpu().numpy(), out_dir / "filters.png", f"first-layer filters ({k[0]} x {k[2]}x{k[3]})")
    return ["filters.png"]


def _activations(f: _Features, class_names: list[str], k: int, out_dir: Path) -> list[str]:
    """Per class the ``k`` images with the highest and the lowest class logit (figure + CSV)."""
    rows: dict[str, Any] = {}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["class", "which", "rank", "path", "label", "logit"])
    for c, name in enumerate(class_names):
        order = np.argsort(-f.logits[:, c], kind="stable")
        picks = {"most": order[:k], "least": order[::-1][:k]}
        for which, idx in picks.items():
            for rank, i in enumerate(idx, start=1):
                w.writerow([name, which, rank, f.samples[i].path, f.samples[i].label or "", f"{f.logits[i, c]:.6g}"])
        caption = lambda i: f"{f.samples[i].label or '?'} {f.logits[i, c]:.2f}"  # noqa: E731
        rows[name] = ([f.images[i] for i in picks["most"]], [caption(i) for i in picks["most"]],
                      [f.images[i] for i in picks["least"]], [caption(i) for i in picks["least"]])  # fmt: skip
    activation_grid(rows, k, out_dir / "activations.png")
    atomic_write_text(out_dir / "activations.csv", buf.getvalue())
    return ["activations.png", "activations.csv"]


def interpret(probe: dict[str, Any], margin: float = 0.1) -> str:
    """A sentence for people: does the source leak through features from outside the lungs?"""
    full, masked = probe["full"], probe["masked"]
    if not full.get("available"):
        return f"no leakage probe: {full.get('reason')}"
    if full["lift"] < margin:
        return "the features barely encode the source (probe within 0.1 of chance on full images)"
    if full["accuracy"] - masked.get("accuracy", full["accuracy"]) >= margin:
        return "the features encode the source, and far less once the lungs alone are shown: the source is read from outside the lungs"
    return "the features encode the source, also from the lungs alone (the source changes the lung fields too, or the mask leaks it)"


def _document(
    ctx: RunContext, f: _Features, probe: dict[str, Any], files: list[str], problems: list[Problem], layer: str, methods: list[str], k: int
) -> dict[str, Any]:  # fmt: skip
    return {
        "run": str(ctx.run_dir),
        "n_images": len(f.samples),
        "feature_dim": int(f.full.shape[1]),
        "layer": layer,
        "classes": {c: int(sum(s.label == c for s in f.samples)) for c in ctx.models.class_names},
        "sources": {str(s): int(n) for s, n in zip(*np.unique(_labels(f, "source"), return_counts=True))},
        "masking": {"dilate_px": ctx.models.cls_cfg.mask_dilate_px, "fill_value": ctx.models.cls_cfg.fill_value},
        "embeddings": methods,
        "k": k,
        "leakage_probe": probe,
        "interpretation": interpret(probe),
        "files": files,
        "problems": [{"path": str(p.path), "kind": p.kind, "reason": p.reason} for p in problems],
    }


__all__ = ["EMBEDDINGS", "FEATURES_HTML", "FEATURES_JSON", "FeaturesResult", "interpret", "leakage", "run_features", "study_samples"]
