"""Each method against its reference implementation (Captum, pytorch-grad-cam, sklearn), numbers not shapes.

The tiny model has torchvision BasicBlocks (one in-place ``nn.ReLU`` used twice per block) and
calibrated BatchNorm; a few checks repeat on the real ResNet-18. Our maps are the references' maps
reduced as the method's ``info.nonneg`` documents (|.| or ReLU, summed over the one input channel).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from explain_helpers import make_tiny, smooth_images
from torch import nn

from lungaudit.classification.model import build_classifier
from lungaudit.config import ClsConfig
from lungaudit.explain import compute_cam, normalize_per_image
from lungaudit.explain.perturbation import (
    grid_segments,
    lime_kernel,
    lime_samples,
    occlusion_masks,
    slic_segments,
    weighted_ridge,
)

LAYER = "layer2"
TARGETS = torch.tensor([2, 0, 1])


def close(ours: torch.Tensor, ref: torch.Tensor, rel: float = 1e-4) -> None:
    """Equal up to float32 noise relative to the map's scale; and not vacuously (the map is not zero)."""
    ref = ref.detach().float()
    assert float(ref.abs().max()) > 0
    torch.testing.assert_close(ours, ref, atol=rel * float(ref.abs().max()), rtol=rel)


def with_score(model: nn.Module, score: str) -> nn.Module:
    """What Captum should explain for our ``score``: the logits, or the log-probabilities."""
    return model if score == "logit" else nn.Sequential(model, nn.LogSoftmax(dim=1)).eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return smooth_images(3)


@pytest.mark.parametrize("score", ["logit", "logprob"])
def test_saliency_and_gradxinput_match_captum(x: torch.Tensor, score: str) -> None:
    from captum.attr import InputXGradient, Saliency

    model = make_tiny()
    ref_model = with_score(copy.deepcopy(model), score)
    sal = compute_cam(model, x, LAYER, TARGETS, method="saliency", score=score).cams
    leaf = x.clone().requires_grad_(True)  # Captum warns when it has to set this itself
    close(sal, Saliency(ref_model).attribute(leaf, target=TARGETS, abs=True)[:, 0])
    gxi = compute_cam(model, x, LAYER, TARGETS, method="gradxinput", score=score).cams
    close(gxi, InputXGradient(ref_model).attribute(leaf, target=TARGETS)[:, 0].abs())


@pytest.mark.parametrize("baseline", [0.0, 0.5])
def test_integrated_gradients_match_captum(x: torch.Tensor, baseline: float) -> None:
    from captum.attr import IntegratedGradients

    model = make_tiny()
    ours = compute_cam(model, x, LAYER, TARGETS, method="integrated_gradients",
                       options={"n_steps": 12, "baseline": baseline, "batch": 7}).cams
    ref = IntegratedGradients(copy.deepcopy(model)).attribute(
        x.clone(), baselines=baseline, target=TARGETS, n_steps=12, method="gausslegendre"
    )
    close(ours, ref[:, 0].abs())


def test_integrated_gradients_completeness(x: torch.Tensor) -> None:
    """IG's axiom: the signed attributions (before the map's |.|) sum to score(x) - score(baseline)."""
    from lungaudit.explain.base import CAM_SCORES, Query
    from lungaudit.explain.gradients import IntegratedGradients

    model = make_tiny()
    q = Query(model, x, None, "", TARGETS, CAM_SCORES.get("logit"))
    att = IntegratedGradients(n_steps=48).attribute(q)
    with torch.no_grad():
        gap = model(x).gather(1, TARGETS[:, None])[:, 0] - model(torch.zeros_like(x)).gather(1, TARGETS[:, None])[:, 0]
    # A ReLU net is only piecewise smooth along the path: the quadrature converges slowly, hence 3 %.
    torch.testing.assert_close(att.maps.sum(dim=(1, 2, 3)), gap, atol=2e-3, rtol=3e-2)


def test_smoothgrad_matches_captum_noise_tunnel(x: torch.Tensor) -> None:
    """Same noise: ours draws it from a CPU generator seeded ``seed``, shared by the batch; Captum from
    the global RNG, which a manual_seed makes the same stream for one image at a time."""
    from captum.attr import NoiseTunnel, Saliency

    model = make_tiny()
    ours = compute_cam(model, x, LAYER, TARGETS, method="smoothgrad",
                       options={"n_samples": 6, "noise_level": 0.2, "seed": 5, "batch": 4}).cams
    nt = NoiseTunnel(Saliency(copy.deepcopy(model)))
    for i in range(len(x)):
        sigma = 0.2 * float(x[i].max() - x[i].min())
        torch.manual_seed(5)
        ref = nt.attribute(x[i : i + 1].clone(), nt_type="smoothgrad", nt_samples=6, stdevs=sigma,
                           target=TARGETS[i : i + 1], abs=True)
        close(ours[i : i + 1], ref[:, 0])


@pytest.mark.parametrize("use_resnet", [False, True])
def test_guided_backprop_matches_captum(x: torch.Tensor, use_resnet: bool) -> None:
    from captum.attr import GuidedBackprop

    torch.manual_seed(0)
    model = build_classifier(ClsConfig(image_size=64), 3).eval() if use_resnet else make_tiny()
    ours = compute_cam(model, x, "layer4" if use_resnet else LAYER, TARGETS, method="guided_backprop").cams
    with pytest.warns(UserWarning):  # Captum warns on every call that it hooks the ReLUs
        ref = GuidedBackprop(copy.deepcopy(model)).attribute(x.clone(), target=TARGETS)
    close(ours, ref[:, 0].abs())
    plain = compute_cam(model, x, LAYER, TARGETS, method="saliency").cams
    assert not torch.allclose(ours, plain, rtol=0.05), "the guided ReLUs changed the gradient"


@pytest.mark.parametrize(("layer", "single_pass"), [("layer2", True), ("layer1", False)])
def test_guided_gradcam_matches_captum(x: torch.Tensor, layer: str, single_pass: bool) -> None:
    """layer2 feeds pool + fc (Grad-CAM read from the guided pass); after layer1 more ReLUs run, so
    Grad-CAM is recomputed on the plain path -- both must equal Captum's GuidedGradCam."""
    from captum.attr import GuidedGradCam

    model = make_tiny()
    ours = compute_cam(model, x, layer, TARGETS, method="guided_gradcam").cams
    ref_model = copy.deepcopy(model)
    with pytest.warns(UserWarning):
        ref = GuidedGradCam(ref_model, ref_model.get_submodule(layer)).attribute(
            x.clone(), target=TARGETS, interpolate_mode="bilinear"
        )
    close(ours, ref[:, 0].abs())


def test_scorecam_matches_pytorch_grad_cam(x: torch.Tensor) -> None:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = make_tiny()
    ref_model = copy.deepcopy(model)
    with pytorch_grad_cam.ScoreCAM(model=ref_model, target_layers=[ref_model.layer2[-1]]) as cam:
        ref = torch.from_numpy(cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(int(t)) for t in TARGETS]))
    # pytorch-grad-cam min-max scales at layer resolution, resizes, then scales again.
    low = compute_cam(model, x, LAYER, TARGETS, method="scorecam", out_size=(16, 16), options={"top_k": None}).cams
    up = F.interpolate(normalize_per_image(low)[:, None], size=(64, 64), mode="bilinear")[:, 0]
    torch.testing.assert_close(normalize_per_image(up), ref, atol=1e-4, rtol=0)
    every = compute_cam(model, x, LAYER, TARGETS, method="scorecam", out_size=(16, 16),
                        options={"top_k": 16, "batch": 5}).cams
    close(every, low)  # k = K is the full method
    top = compute_cam(model, x, LAYER, TARGETS, method="scorecam", out_size=(16, 16), options={"top_k": 4}).cams
    assert not torch.allclose(top, low, rtol=1e-3)
    assert float(F.cosine_similarity(top.flatten(1), low.flatten(1)).min()) > 0.5  # the strongest channels dominate


@pytest.mark.parametrize(("window", "stride", "score"), [(16, 8, "logit"), (24, 16, "logprob")])
def test_occlusion_matches_captum(x: torch.Tensor, window: int, stride: int, score: str) -> None:
    """(24, 16) on 64 px: the last window is clipped at the border, as Captum places it."""
    from captum.attr import Occlusion

    model = make_tiny()
    ours = compute_cam(model, x, LAYER, TARGETS, method="occlusion", score=score,
                       options={"window": window, "stride": stride, "batch": 10}).cams
    ref = Occlusion(with_score(copy.deepcopy(model), score)).attribute(
        x.clone(), sliding_window_shapes=(1, window, window), strides=(1, stride, stride), baselines=0.0,
        target=TARGETS, perturbations_per_eval=8,
    )
    close(ours, F.relu(ref[:, 0]))


def test_occlusion_masks_cover_every_pixel() -> None:
    masks = occlusion_masks(64, 50, 16, 12, torch.device("cpu"))
    # rows start at 0, 12, 24, 36, 48; columns at 0, 12, 24, 36, the last clipped to 14 px.
    assert masks.shape == (5 * 4, 64, 50) and bool((masks.sum(0) >= 1).all())
    assert sorted(set(masks.sum((1, 2)).tolist())) == [16.0 * 14, 16.0 * 16]
    with pytest.raises(ValueError, match="must not exceed the window"):
        occlusion_masks(64, 64, 8, 9, torch.device("cpu"))
    with pytest.raises(ValueError, match="exceeds the image"):
        occlusion_masks(32, 64, 40, 8, torch.device("cpu"))


def test_weighted_ridge_matches_sklearn() -> None:
    from sklearn.linear_model import Ridge

    g = torch.Generator().manual_seed(0)
    z = torch.bernoulli(torch.full((60, 9), 0.5), generator=g)
    y = torch.randn(60, 4, generator=g) + z @ torch.randn(9, 4, generator=g)
    w = torch.rand(60, generator=g)
    ours = weighted_ridge(z, y, w, alpha=0.7)
    for j in range(4):
        ref = Ridge(alpha=0.7).fit(z.numpy(), y[:, j].numpy(), sample_weight=w.numpy()).coef_
        np.testing.assert_allclose(ours[j].numpy(), ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("segments", ["grid", "slic"])
def test_lime_matches_captum(x: torch.Tensor, segments: str) -> None:
    """Captum's Lime fed our samples (a generator perturb_func), our kernel and a sklearn Ridge with
    the same alpha, on our superpixels: the same signed surrogate coefficients (compared before the
    ReLU, which on this model zeroes many of them), for two images with their own targets."""
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import Lime

    from lungaudit.explain.base import CAM_SCORES, Query, frozen_eval
    from lungaudit.explain.perturbation import Lime as OurLime

    model = make_tiny()
    method = OurLime(segments=segments, n_segments=16, n_samples=50, seed=3, batch=9)
    with frozen_eval(model):
        signed = method.attribute(Query(model, x[:2], None, "", TARGETS[:2], CAM_SCORES.get("logit"))).maps
    z = lime_samples(16, 50, seed=3)

    def samples(_inputs: torch.Tensor, **_kw: object):
        for row in z:
            yield row[None].long()

    lime = Lime(copy.deepcopy(model), interpretable_model=SkLearnRidge(alpha=1.0),
                similarity_func=lambda _a, _b, interp, **_kw: lime_kernel(interp.float(), 0.25), perturb_func=samples)
    labels = method.superpixels(x[:2])
    for i in range(2):
        ref = lime.attribute(x[i : i + 1].clone(), target=int(TARGETS[i]), feature_mask=labels[i : i + 1, None],
                             n_samples=50, baselines=0.0)
        close(signed[i : i + 1], ref[:, 0], rel=1e-3)
    relu = compute_cam(model, x[:2], LAYER, TARGETS[:2], method="lime", options=vars(method)).cams
    torch.testing.assert_close(relu, F.relu(signed))


def test_grid_and_slic_superpixels() -> None:
    grid = grid_segments(2, 64, 48, 16, torch.device("cpu"))
    assert grid.shape == (2, 64, 48) and torch.equal(torch.bincount(grid[0].flatten()), torch.full((16,), 16 * 12))
    # A bright square off the grid: SLIC superpixels follow its edge, grid cells cut across it.
    img = torch.zeros(1, 1, 64, 64)
    img[..., 10:31, 21:42] = 1.0
    slic = slic_segments(img, 16)
    assert slic.shape == (1, 64, 64) and int(slic.min()) >= 0 and int(slic.max()) < 16
    assert torch.equal(slic, slic_segments(img, 16))  # deterministic

    def impurity(labels: torch.Tensor) -> float:
        inside = img[0, 0].flatten() > 0.5
        lab = labels[0].flatten()
        return sum(min(int((inside & (lab == k)).sum()), int((~inside & (lab == k)).sum())) for k in lab.unique())

    assert impurity(slic) < 0.1 * impurity(grid_segments(1, 64, 64, 16, torch.device("cpu")))


def test_lime_finds_the_only_superpixel_the_model_reads() -> None:
    """A model that scores the mean of the top-left quadrant: LIME on a 2 x 2 grid gives that
    quadrant all the (positive) weight and the three others none."""

    class Quadrant(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = x[:, 0, :32, :32].mean((1, 2))
            return torch.stack([s, -s], 1)

    x = torch.full((1, 1, 64, 64), 0.5)
    m = compute_cam(Quadrant(), x, "", [0], method="lime", options={"n_segments": 4, "n_samples": 64}).cams[0]
    assert float(m[:32, :32].min()) > 0.3 and float(m[32:].max()) < 0.01 and float(m[:, 32:].max()) < 0.01
