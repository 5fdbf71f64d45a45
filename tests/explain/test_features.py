"""Feature-space views: penultimate features, 2-D embeddings and the source-leakage probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from explain_helpers import make_tiny, smooth_images

from lungaudit.classification.model import build_classifier
from lungaudit.config import ClsConfig
from lungaudit.explain.features import embed_2d, penultimate_features, source_leakage_probe


def test_penultimate_features_are_what_the_head_reads() -> None:
    torch.manual_seed(0)
    model = build_classifier(ClsConfig(image_size=64), 4).train()
    x = torch.rand(5, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    feats = penultimate_features(model, x, batch=2)  # 3 chunks
    assert feats.shape == (5, 512) and feats.dtype == torch.float32
    assert model.training and not any(m._forward_hooks for m in model.modules())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.fc(feats), model(x), atol=1e-5, rtol=1e-4)  # fc(features) = logits
    torch.testing.assert_close(penultimate_features(model, x, batch=64), feats, atol=1e-5, rtol=1e-4)


def test_masked_features_fill_outside_the_mask() -> None:
    model = make_tiny()
    x = smooth_images(3)
    masks = torch.zeros(3, 64, 64, dtype=torch.bool)
    masks[:, 16:48, 8:56] = True
    masked = penultimate_features(model, x, masks=masks, fill_value=0.25)
    by_hand = penultimate_features(model, torch.where(masks[:, None], x, torch.tensor(0.25)))
    torch.testing.assert_close(masked, by_hand)
    assert not torch.allclose(masked, penultimate_features(model, x))
    with pytest.raises(ValueError, match="masks must be"):
        penultimate_features(model, x, masks=masks[:, :32])
    with pytest.raises(ValueError, match="not a submodule"):
        penultimate_features(model, x, layer="head")


def test_embeddings() -> None:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    f = np.concatenate([rng.normal(0, 1, (20, 6)), rng.normal(4, 1, (20, 6))])
    pca = embed_2d(torch.from_numpy(f), "pca")
    np.testing.assert_allclose(np.abs(pca), np.abs(PCA(2).fit_transform(StandardScaler().fit_transform(f))), atol=1e-8)
    for method in ("tsne", "kpca"):
        e = embed_2d(f, method, seed=1)
        assert e.shape == (40, 2) and np.isfinite(e).all()
        np.testing.assert_allclose(e, embed_2d(f, method, seed=1))  # deterministic per seed
        # The two clusters stay apart: each point's nearest neighbour is in its own cluster.
        d = np.linalg.norm(e[:, None] - e[None], axis=-1) + np.eye(40) * 1e9
        assert ((d.argmin(1) < 20) == (np.arange(40) < 20)).all()
    with pytest.raises(ValueError, match="'pca', 'tsne' or 'kpca'"):
        embed_2d(f, "umap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        embed_2d(np.full((5, 2), np.nan))


def test_leakage_probe_finds_an_encoded_source_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    sources = np.array(["siteA"] * 60 + ["siteB"] * 30 + ["siteC"] * 30)
    noise = rng.normal(size=(120, 16))
    encoded = noise.copy()
    encoded[:, 0] += 5 * (sources == "siteB")  # one feature carries the source
    encoded[:, 1] += 5 * (sources == "siteC")
    leak = source_leakage_probe(encoded, sources, n_splits=5, seed=0)
    assert leak.accuracy > 0.95 and leak.balanced_accuracy > 0.95 and leak.lift > 0.4
    assert leak.chance == pytest.approx(0.5) and leak.balanced_chance == pytest.approx(1 / 3)
    assert leak.sources == ("siteA", "siteB", "siteC") and leak.n_samples == 120 and len(leak.per_fold) == 5
    none = source_leakage_probe(noise, sources, n_splits=5, seed=0)
    assert abs(none.balanced_accuracy - none.balanced_chance) < 0.15 and none.accuracy < 0.65
    again = source_leakage_probe(torch.from_numpy(noise), list(sources), n_splits=5, seed=0)
    assert again.per_fold == none.per_fold  # seeded folds


def test_leakage_probe_rejects_what_it_cannot_measure() -> None:
    f = np.random.default_rng(0).normal(size=(12, 3))
    with pytest.raises(ValueError, match="at least 2 sources"):
        source_leakage_probe(f, ["a"] * 12)
    with pytest.raises(ValueError, match="needs >= n_splits"):
        source_leakage_probe(f, ["a"] * 9 + ["b"] * 3, n_splits=5)
    with pytest.raises(ValueError, match="13 entries for 12"):
        source_leakage_probe(f, ["a", "b"] * 6 + ["a"])
