"""Registry-driven: every name in CAM_METHODS gets the same contract tests, on a tiny ResNet-shaped model."""

from __future__ import annotations

import copy

import pytest
import torch
from explain_helpers import make_tiny
from torch import nn

from lungaudit.classification.model import build_classifier
from lungaudit.config import ClsConfig
from lungaudit.explain import CAM_METHODS, compute_cam, method_info

METHODS = CAM_METHODS.names()
LAYER = "layer2"
TARGETS = torch.tensor([2, 0, 1])
# Cheaper settings for the real ResNet-18 run; the tiny model runs every method at its defaults.
SMALL = {"scorecam": {"top_k": 8}, "smoothgrad": {"n_samples": 4}, "integrated_gradients": {"n_steps": 4},
         "occlusion": {"window": 32}, "lime": {"n_samples": 16, "n_segments": 4}}


# Cheaper settings for the repeated contract tests (defaults run once, in the contract test); the small
# batches make every chunked method split its rows across passes mid-image.
FAST = {"scorecam": {"top_k": 6, "batch": 5}, "smoothgrad": {"n_samples": 4, "batch": 5},
        "integrated_gradients": {"n_steps": 6, "batch": 5}, "occlusion": {"window": 16, "batch": 7},
        "lime": {"n_samples": 40, "batch": 16}}


def _tol(ref: torch.Tensor) -> dict[str, float]:
    return {"atol": 1e-5 * float(ref.abs().max()) + 1e-12, "rtol": 1e-4}


def test_registry_lists_the_issue_methods() -> None:
    expected = {"cam", "gradcam", "gradcampp", "scorecam", "saliency", "gradxinput", "smoothgrad",
                "integrated_gradients", "guided_backprop", "guided_gradcam", "occlusion", "lime"}
    assert expected <= set(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_metadata(method: str) -> None:
    info = method_info(method)
    assert info.kind in ("cam", "gradient", "perturbation") and info.nonneg in ("relu", "abs")
    assert info.forwards >= 1 and info.cost and info.paper and info.reference
    assert info.needs_target_layer == (info.kind == "cam" or method == "guided_gradcam")
    assert CAM_METHODS.get(method).__doc__, "every method documents what it is"


@pytest.mark.parametrize("method", METHODS)
def test_maps_contract_with_per_sample_targets(method: str, images: torch.Tensor) -> None:
    model = make_tiny()
    res = compute_cam(model, images, LAYER, targets=TARGETS, method=method, out_size=(40, 56))
    assert res.cams.shape == (3, 40, 56) and res.cams.dtype == torch.float32
    assert bool(torch.isfinite(res.cams).all()) and bool((res.cams >= 0).all())
    assert float(res.cams.max()) > 0, "the maps are not trivially zero"
    assert res.targets.tolist() == TARGETS.tolist()
    with torch.no_grad():
        torch.testing.assert_close(res.logits, model(images))
    assert not res.cams.requires_grad and not res.logits.requires_grad
    assert compute_cam(model, images, LAYER, method=method).cams.shape == (3, 64, 64)  # out_size defaults to the input


@pytest.mark.parametrize("method", METHODS)
def test_yielded_maps_are_exactly_those_methods_own(method: str, images: torch.Tensor) -> None:
    """``also`` holds exactly ``info.yields``, each equal to a call of that method (serve audits with it)."""
    model = make_tiny()
    res = compute_cam(model, images, LAYER, targets=TARGETS, method=method, out_size=(40, 56), score="logprob",
                      options=FAST.get(method))  # fmt: skip
    assert set(res.also) == set(method_info(method).yields) and set(res.also) <= set(METHODS)
    for name, cams in res.also.items():
        alone = compute_cam(model, images, LAYER, targets=TARGETS, method=name, out_size=(40, 56), score="logprob")
        torch.testing.assert_close(cams, alone.cams, rtol=1e-6, atol=1e-9)


def test_guided_gradcam_yields_gradcam_also_when_relus_follow_the_layer(images: torch.Tensor) -> None:
    """After layer1 more ReLUs run, so the guided pass's layer gradient is not Grad-CAM's: the map it
    yields must still be the plain Grad-CAM (recomputed), not the guided one."""
    model = make_tiny()
    res = compute_cam(model, images, "layer1", targets=TARGETS, method="guided_gradcam")
    alone = compute_cam(model, images, "layer1", targets=TARGETS, method="gradcam")
    torch.testing.assert_close(res.also["gradcam"], alone.cams, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_one_at_a_time_and_targets_matter(method: str, images: torch.Tensor) -> None:
    model = make_tiny()
    opts = FAST.get(method)
    res = compute_cam(model, images, LAYER, targets=TARGETS, method=method, options=opts)
    for i in range(len(images)):
        one = compute_cam(model, images[i : i + 1], LAYER, targets=TARGETS[i : i + 1], method=method, options=opts)
        torch.testing.assert_close(res.cams[i : i + 1], one.cams, **_tol(one.cams))
    other = compute_cam(model, images, LAYER, targets=torch.tensor([1, 1, 0]), method=method, options=opts).cams
    for i in range(len(images)):
        assert not torch.allclose(res.cams[i], other[i], atol=1e-6 * float(res.cams[i].max())), f"image {i}"


@pytest.mark.parametrize("method", METHODS)
def test_default_targets_are_the_prediction(method: str, images: torch.Tensor) -> None:
    model = make_tiny()
    opts = FAST.get(method)
    res = compute_cam(model, images, LAYER, method=method, out_size=(8, 8), options=opts)
    with torch.no_grad():
        assert res.targets.tolist() == model(images).argmax(1).tolist()
    given = compute_cam(model, images, LAYER, targets=res.targets, method=method, out_size=(8, 8), options=opts)
    torch.testing.assert_close(res.cams, given.cams)


@pytest.mark.parametrize("method", METHODS)
def test_model_state_untouched(method: str, images: torch.Tensor) -> None:
    model = make_tiny().train()
    model.conv1.weight.requires_grad_(False)  # a caller's frozen layer stays frozen
    model.layer1[0].bn1.eval()  # and a caller's frozen BatchNorm keeps its own mode
    model.fc.weight.grad = torch.full_like(model.fc.weight, 7.0)  # a caller's accumulated gradient
    before = copy.deepcopy(model.state_dict())
    compute_cam(model, images, LAYER, targets=TARGETS, method=method, options=FAST.get(method))
    assert [p.requires_grad for p in model.parameters()].count(False) == 1 and not model.conv1.weight.requires_grad
    assert all(p.grad is None for n, p in model.named_parameters() if n != "fc.weight")
    assert bool((model.fc.weight.grad == 7.0).all())
    assert model.training and not model.layer1[0].bn1.training and model.layer2[0].bn1.training
    for k, v in model.state_dict().items():  # run in eval mode: no BatchNorm statistics update
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())


@pytest.mark.parametrize("method", METHODS)
def test_state_restored_on_error(method: str, images: torch.Tensor) -> None:
    model = make_tiny().train()
    with pytest.raises(ValueError, match="targets must lie"):
        compute_cam(model, images, LAYER, targets=torch.tensor([0, 1, 9]), method=method, options=FAST.get(method))
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert all(m.training for m in model.modules())
    assert not any(m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("method", METHODS)
def test_works_under_callers_no_grad_and_inference_input(method: str, images: torch.Tensor) -> None:
    model = make_tiny()
    opts = FAST.get(method)
    ref = compute_cam(model, images, LAYER, targets=TARGETS, method=method, options=opts).cams
    with torch.no_grad():
        inside = compute_cam(model, images, LAYER, targets=TARGETS, method=method, options=opts).cams
    torch.testing.assert_close(inside, ref)
    leaf = images.clone().requires_grad_(True)  # a caller's input that requires grad is not touched
    torch.testing.assert_close(compute_cam(model, leaf, LAYER, targets=TARGETS, method=method, options=opts).cams, ref)
    assert leaf.grad is None


@pytest.mark.parametrize("method", METHODS)
def test_bad_input_raises(method: str, images: torch.Tensor) -> None:
    model = make_tiny()
    with pytest.raises(ValueError, match="targets must have shape"):
        compute_cam(model, images, LAYER, targets=torch.tensor([0, 1]), method=method, options=FAST.get(method))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        compute_cam(model, images[0], LAYER, method=method, options=FAST.get(method))
    with pytest.raises(ValueError, match="out_size"):
        compute_cam(model, images, LAYER, method=method, out_size=(0, 4), options=FAST.get(method))
    if method_info(method).needs_target_layer:
        with pytest.raises(ValueError, match="not a submodule"):
            compute_cam(model, images, "layer9", method=method, options=FAST.get(method))
    else:  # documented: layer-free methods ignore target_layer
        compute_cam(model, images[:1], "layer9", method=method, out_size=(4, 4), options=FAST.get(method))


def test_unknown_method_and_bad_options() -> None:
    x = torch.rand(1, 1, 64, 64)
    with pytest.raises(ValueError, match="gradcam"):  # the message lists the valid names
        compute_cam(make_tiny(), x, LAYER, method="nope")
    for method, options in [("integrated_gradients", {"n_steps": 0}), ("smoothgrad", {"noise_level": -1.0}),
                            ("occlusion", {"batch": 0}), ("lime", {"segments": "quickshift"}),
                            ("scorecam", {"top_k": 0})]:
        with pytest.raises(ValueError):
            compute_cam(make_tiny(), x, LAYER, method=method, options=options)
    with pytest.raises(ValueError, match="gradcam takes no option.*n_steps; valid: none"):
        compute_cam(make_tiny(), x, LAYER, method="gradcam", options={"n_steps": 3})
    with pytest.raises(ValueError, match="n_step; valid: n_steps, baseline, batch"):
        compute_cam(make_tiny(), x, LAYER, method="integrated_gradients", options={"n_step": 3})


@pytest.mark.parametrize("method", METHODS)
def test_resnet18_layer4(method: str) -> None:
    """The real classifier (1-channel stem, output stride 16, reused in-place ReLUs) with every method."""
    torch.manual_seed(0)
    model = build_classifier(ClsConfig(image_size=64), 4).eval()
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    res = compute_cam(model, x, "layer4", targets=[3, 1], method=method, out_size=(32, 32), options=SMALL.get(method))
    assert res.cams.shape == (2, 32, 32) and bool(torch.isfinite(res.cams).all()) and bool((res.cams >= 0).all())
    assert float(res.cams.max()) > 0
    assert not any(m._forward_hooks for m in model.modules())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", METHODS)
def test_cuda_matches_cpu(method: str, images: torch.Tensor) -> None:
    model = make_tiny()
    ref = compute_cam(model, images, LAYER, targets=TARGETS, method=method)
    res = compute_cam(model.cuda(), images.cuda(), LAYER, targets=TARGETS, method=method)
    assert res.cams.device.type == res.logits.device.type == res.targets.device.type == "cuda"
    torch.testing.assert_close(res.cams.cpu(), ref.cams, atol=1e-4 * float(ref.cams.max()), rtol=1e-3)


def test_tiny_model_is_not_homogeneous(images: torch.Tensor) -> None:
    """Guards the reference tests below: on a bias-free ReLU net IG would equal gradient x input."""
    model: nn.Module = make_tiny()
    ig = compute_cam(model, images, LAYER, targets=TARGETS, method="integrated_gradients").cams
    gxi = compute_cam(model, images, LAYER, targets=TARGETS, method="gradxinput").cams
    assert not torch.allclose(ig, gxi, rtol=0.05, atol=0)
