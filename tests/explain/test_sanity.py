"""Sanity checks (Adebayo et al.): rank/SSIM similarity, the cascade, and verdicts where the answer is known."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from explain_helpers import TinyNet, make_tiny, square_task, train_tiny
from torch import nn

from lungaudit.explain.base import Attribution, ExplainMethod, MethodInfo, Query
from lungaudit.explain.sanity import (
    average_ranks,
    cascading_randomization,
    compare_maps,
    data_randomization_test,
    model_randomization_test,
    randomization_layers,
    reinitialize,
    spearman,
    ssim,
)


class InputIntensity(ExplainMethod):
    """A 'method' that ignores the model: the map is the image. It must fail every randomisation test."""

    name = "input_intensity"
    info = MethodInfo("gradient", False, "1 forward", 1.0, "-", "-", "relu")

    def attribute(self, q: Query) -> Attribution:
        with torch.no_grad():
            logits = q.model(q.x)
        return Attribution(logits, q.resolve_targets(logits), q.x)


@pytest.fixture(scope="module")
def trained() -> tuple[TinyNet, torch.Tensor]:
    """A TinyNet that learned the square task, and 12 held-out images it gets right."""
    x, y = square_task(64)
    model = train_tiny(x, y, steps=30)
    xt, yt = square_task(48, seed=1)
    with torch.no_grad():
        right = model(xt).argmax(1) == yt
    assert float(right.float().mean()) > 0.9, "the tiny model must learn the task for the test to mean anything"
    return model, xt[right][:12]


def test_spearman_matches_scipy_with_ties() -> None:
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (4, 7, 9), generator=g).float()  # many ties
    b = torch.relu(torch.randn(4, 7, 9, generator=g))  # a zero plateau, as ReLU'd maps have
    ours = spearman(a, b)
    for i in range(4):
        assert ours[i].item() == pytest.approx(spearmanr(a[i].flatten(), b[i].flatten()).statistic, abs=1e-10)
    ranks = average_ranks(torch.tensor([[3.0, 1.0, 3.0, 2.0, 1.0]]))
    assert ranks.tolist() == [[4.5, 1.5, 4.5, 3.0, 1.5]]


def test_spearman_constant_maps() -> None:
    varying = torch.arange(12.0).view(1, 3, 4)
    flat = torch.zeros(1, 3, 4)
    assert spearman(varying, flat).item() == 0.0
    assert torch.isnan(spearman(flat, flat)).all()
    assert spearman(varying, varying * 3 + 1).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="share"):
        spearman(varying, torch.zeros(1, 4, 3))


def test_ssim_matches_monai() -> None:
    from monai.metrics import SSIMMetric

    g = torch.Generator().manual_seed(1)
    a = torch.rand(3, 32, 32, generator=g)
    b = a + 0.3 * torch.rand(3, 32, 32, generator=g)
    ours = ssim(a, b)
    norm = [((t - t.flatten(1).amin(1)[:, None, None]) / (t.flatten(1).amax(1) - t.flatten(1).amin(1))[:, None, None])
            for t in (a, b)]
    ref = SSIMMetric(spatial_dims=2, data_range=1.0, reduction="none")(norm[0][:, None], norm[1][:, None])[:, 0]
    np.testing.assert_allclose(ours.numpy(), ref.double().numpy(), atol=1e-4)
    assert ssim(a, a * 2).tolist() == pytest.approx([1.0] * 3)  # scale-free: maps are min-max scaled first
    assert float(ours.max()) < 0.99


def test_cascade_order_determinism_and_isolation() -> None:
    model = make_tiny()
    original = copy.deepcopy(model.state_dict())
    assert randomization_layers(model) == ["fc", "layer2", "layer1", "bn1", "conv1"]
    rng = torch.get_rng_state()
    stages = [(name, copy.deepcopy(m.state_dict())) for name, m in cascading_randomization(model, seed=3)]
    assert torch.equal(torch.get_rng_state(), rng), "the global RNG is left alone"
    assert [n for n, _ in stages] == ["fc", "layer2", "layer1", "bn1", "conv1"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, original[k]), "the caller's model is untouched"
    # Cumulative: after stage s, layers[:s+1] differ from the trained weights and the rest do not.
    for s, (_name, state) in enumerate(stages):
        done = {n for n, _ in stages[: s + 1]}
        for k in ("fc.weight", "layer2.0.conv1.weight", "layer1.0.conv2.weight", "bn1.weight", "conv1.weight"):
            changed = not torch.equal(state[k], original[k])
            assert changed == (k.split(".")[0] in done), (s, k)
    again = [copy.deepcopy(m.state_dict()) for _n, m in cascading_randomization(model, seed=3)]
    other = [copy.deepcopy(m.state_dict()) for _n, m in cascading_randomization(model, seed=4)]
    assert all(torch.equal(again[-1][k], stages[-1][1][k]) for k in original)
    assert not torch.equal(other[-1]["conv1.weight"], stages[-1][1]["conv1.weight"])
    with pytest.raises(AttributeError):
        next(cascading_randomization(model, layers=["fc", "nope"]))


def test_reinitialize_refuses_parameters_it_cannot_reset() -> None:
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.ones(1))

    with pytest.raises(ValueError, match="reset_parameters"):
        reinitialize(nn.Sequential(nn.Linear(2, 2), Scale()), seed=0)


def test_model_randomization_verdicts(trained: tuple[TinyNet, torch.Tensor]) -> None:
    """The input-only 'method' fails (correlation 1 at every stage); Grad-CAM on the trained model
    passes (its maps decorrelate once the weights are random)."""
    model, x = trained
    curves = model_randomization_test(model, x, ["gradcam", InputIntensity()], target_layer="layer2")
    ident = curves["input_intensity"]
    assert ident.verdict == "fail" and torch.allclose(ident.spearman, torch.ones_like(ident.spearman))
    assert ident.layers == ("fc", "layer2", "layer1", "bn1", "conv1") and ident.spearman.shape == (5, len(x))
    grad = curves["gradcam"]
    assert grad.verdict == "pass" and grad.final.mean_spearman < 0.4
    assert grad.ssim is not None and grad.ssim.shape == (5, len(x)) and float(grad.ssim[-1].mean()) < 0.5


def test_data_randomization_compares_two_models(trained: tuple[TinyNet, torch.Tensor]) -> None:
    model, x = trained
    same = data_randomization_test(model, copy.deepcopy(model), x, ["gradcam", "saliency"], target_layer="layer2")
    assert all(s.verdict == "fail" and s.mean_spearman == pytest.approx(1.0) for s in same.values())
    xs, ys = square_task(64)
    shuffled = ys[torch.randperm(len(ys), generator=torch.Generator().manual_seed(0))]
    random_labels = train_tiny(xs, shuffled, steps=30, seed=1)
    res = data_randomization_test(model, random_labels, x, ["gradcam", InputIntensity()], target_layer="layer2")
    assert res["gradcam"].verdict == "pass" and res["input_intensity"].verdict == "fail"


def test_compare_maps_threshold() -> None:
    a = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0))
    assert compare_maps(a, a, threshold=0.5).verdict == "fail"
    assert compare_maps(a, a.flip(-1).flip(-2) * 0 + torch.rand(2, 8, 8), threshold=0.99).verdict == "pass"
    assert compare_maps(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8)).verdict == "undefined"
