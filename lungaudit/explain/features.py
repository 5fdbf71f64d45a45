"""Feature-space views of a classifier: penultimate features, 2-D embeddings and a source-leakage probe.

The question they answer is not "where does the model look" but "what does it encode": if a linear
probe can tell an image's *source* (hospital, collection) from the features the classifier uses, and
it still can on lung-masked input only far less, the model carries where-the-image-came-from
information from outside the lungs -- the confounder behind shortcut learning (DeGrave et al. 2021).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from torch import nn

from lungaudit.explain.base import check_positive_int, frozen_eval, resolve_layer

Embedding = Literal["pca", "tsne", "kpca"]


def penultimate_features(
    model: nn.Module,
    x: torch.Tensor,
    layer: str = "avgpool",
    batch: int = 64,
    masks: torch.Tensor | None = None,
    fill_value: float = 0.0,
) -> torch.Tensor:
    """(N, C, H, W) images -> (N, D) float32 features: ``layer``'s output, flattened, on x's device.

    ``layer`` defaults to ResNet's ``avgpool`` (what ``fc`` reads). With ``masks`` (N, H, W), bool or
    {0, 1}, pixels outside the mask are set to ``fill_value`` first -- pass the same (dilated) gate and
    fill the classifier was trained with, so the masked input is one it has seen. Runs in eval mode
    without grad (modes restored), ``batch`` images per forward.
    """
    check_positive_int("batch", batch)
    if x.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
    if masks is not None:
        if masks.shape != (x.shape[0], *x.shape[-2:]):
            raise ValueError(f"masks must be (N, H, W) = {(x.shape[0], *x.shape[-2:])}, got {tuple(masks.shape)}")
        x = torch.where(masks[:, None].to(x.device) > 0, x, torch.full_like(x, fill_value))
    captured: list[torch.Tensor] = []
    handle = resolve_layer(model, layer).register_forward_hook(lambda _m, _i, out: captured.append(out.flatten(1)))
    try:
        with frozen_eval(model), torch.no_grad():
            for chunk in x.split(batch):
                model(chunk)
    finally:
        handle.remove()
    if len(captured) != len(x.split(batch)):
        raise ValueError(f"layer {layer!r} must run exactly once per forward, ran {len(captured)} times")
    return torch.cat(captured).float()


def _as_numpy(features: torch.Tensor | np.ndarray) -> np.ndarray:
    f = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if f.ndim != 2 or len(f) < 3:
        raise ValueError(f"features must be (N, D) with N >= 3, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or inf")
    return f.astype(np.float64)


def embed_2d(features: torch.Tensor | np.ndarray, method: Embedding = "pca", seed: int = 0) -> np.ndarray:
    """(N, D) features -> (N, 2) embedding, after standardising each feature.

    ``pca``: the two leading principal components; ``tsne``: t-SNE (PCA init, perplexity
    min(30, (N - 1) / 3), seeded); ``kpca``: RBF kernel PCA (gamma = 1 / D). Deterministic per seed.
    """
    from sklearn.decomposition import PCA, KernelPCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    f = StandardScaler().fit_transform(_as_numpy(features))
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(f)
    if method == "tsne":
        perplexity = float(min(30.0, (len(f) - 1) / 3))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(f)
    if method == "kpca":
        return KernelPCA(n_components=2, kernel="rbf", gamma=1.0 / f.shape[1], random_state=seed).fit_transform(f)
    raise ValueError(f"method must be 'pca', 'tsne' or 'kpca', got {method!r}")


@dataclass(frozen=True)
class LeakageProbe:
    """Cross-validated linear probe of the image source from features.

    ``accuracy`` and ``balanced_accuracy`` are means over the folds (``accuracy_std`` their spread);
    ``chance`` is the majority source's share (what always guessing it scores), ``balanced_chance``
    1 / number of sources. ``per_fold`` holds the fold accuracies.
    """

    accuracy: float
    accuracy_std: float
    balanced_accuracy: float
    chance: float
    balanced_chance: float
    n_splits: int
    n_samples: int
    sources: tuple[str, ...]
    per_fold: tuple[float, ...]

    @property
    def lift(self) -> float:
        """Accuracy above chance, in [-chance, 1 - chance]: ~0 means the features do not encode the source."""
        return self.accuracy - self.chance


def source_leakage_probe(
    features: torch.Tensor | np.ndarray,
    sources: Sequence[object],
    n_splits: int = 5,
    seed: int = 0,
    c: float = 1.0,
) -> LeakageProbe:
    """How well a logistic regression predicts each image's source from its (N, D) features.

    Stratified ``n_splits``-fold cross-validation (shuffled with ``seed``) of standardised features ->
    L2 logistic regression (inverse strength ``c``). Every source needs at least ``n_splits`` images.
    Compare full-image with lung-masked features: a high figure that drops on masked input means the
    model encodes where the image came from outside the lungs.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_validate
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    f = _as_numpy(features)
    labels = np.asarray([str(s) for s in sources])
    if len(labels) != len(f):
        raise ValueError(f"sources has {len(labels)} entries for {len(f)} feature rows")
    names, counts = np.unique(labels, return_counts=True)
    if len(names) < 2:
        raise ValueError(f"need at least 2 sources to probe, got {names.tolist()}")
    if counts.min() < n_splits or n_splits < 2:
        per_source = dict(zip(names.tolist(), counts.tolist()))
        raise ValueError(f"every source needs >= n_splits = {n_splits} (>= 2) images; counts: {per_source}")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    scores = cross_validate(probe, f, labels, cv=cv, scoring=("accuracy", "balanced_accuracy"))
    acc = scores["test_accuracy"]
    return LeakageProbe(
        accuracy=float(acc.mean()),
        accuracy_std=float(acc.std()),
        balanced_accuracy=float(scores["test_balanced_accuracy"].mean()),
        chance=float(counts.max() / counts.sum()),
        balanced_chance=1.0 / len(names),
        n_splits=n_splits,
        n_samples=len(f),
        sources=tuple(names.tolist()),
        per_fold=tuple(float(a) for a in acc),
    )


__all__ = ["LeakageProbe", "embed_2d", "penultimate_features", "source_leakage_probe"]
