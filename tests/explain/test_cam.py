"""The layer CAMs on the real ResNet-18: hand computation, Captum / pytorch-grad-cam parity, scores, batching.

The contract every registered method shares (shapes, state, no_grad, errors) is in test_methods.py."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lungaudit.classification.model import build_classifier
from lungaudit.config import ClsConfig
from lungaudit.explain import compute_cam, normalize_per_image
from lungaudit.explain.cam import CAM_SCORES

@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return build_classifier(ClsConfig(image_size=64), 4).eval()


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(1))


def tiny() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)
    ).eval()


def test_gradcam_matches_hand_computation() -> None:
    model = tiny()
    x = torch.rand(2, 1, 5, 6, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([1, 0])
    res = compute_cam(model, x, "1", targets=targets, out_size=(5, 6))
    with torch.no_grad():
        a = F.relu(model[0](x))  # (N, K, h, w)
        # score_c = sum_k W[c,k] * mean_ij A_k(i,j) + b  =>  dScore/dA_k(i,j) = W[c,k] / (h*w), alpha_k its mean
        alpha = model[4].weight[targets] / (5 * 6)  # (N, K)
        expected = F.relu((alpha[:, :, None, None] * a).sum(1))
        logits = model(x)
    torch.testing.assert_close(res.cams, expected, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(res.logits, logits)
    assert res.targets.tolist() == [1, 0]
    up = compute_cam(model, x, "1", targets=targets, out_size=(10, 12)).cams
    torch.testing.assert_close(up, F.interpolate(expected[:, None], size=(10, 12), mode="bilinear")[:, 0])


def test_matches_captum_raw(resnet: nn.Module, batch: torch.Tensor) -> None:
    from captum.attr import LayerAttribution, LayerGradCam

    targets = torch.tensor([0, 1, 2, 3])
    ours_low = compute_cam(resnet, batch, "layer4", targets=targets, out_size=(4, 4)).cams
    ref_low = LayerGradCam(resnet, resnet.layer4).attribute(batch, target=targets, relu_attributions=True)
    torch.testing.assert_close(ours_low, ref_low[:, 0].detach(), atol=1e-6, rtol=1e-4)
    assert ours_low.max() > 0  # the comparison is not vacuous
    ours = compute_cam(resnet, batch, "layer4", targets=targets).cams
    ref = LayerAttribution.interpolate(ref_low.detach(), (64, 64), interpolate_mode="bilinear")[:, 0]
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize(("method", "ref_name"), [("gradcam", "GradCAM"), ("gradcampp", "GradCAMPlusPlus")])
def test_matches_pytorch_grad_cam_after_its_normalisation(
    resnet: nn.Module, batch: torch.Tensor, method: str, ref_name: str
) -> None:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [3, 2, 1, 0]
    ref_model = copy.deepcopy(resnet)  # it fills .grad and leaves hooks; keep the shared model clean
    with getattr(pytorch_grad_cam, ref_name)(model=ref_model, target_layers=[ref_model.layer4[-1]]) as cam:
        ref = torch.from_numpy(cam(input_tensor=batch, targets=[ClassifierOutputTarget(t) for t in targets]))
    # pytorch-grad-cam min-max scales at layer resolution, resizes, then scales again.
    low = compute_cam(resnet, batch, "layer4", targets=torch.tensor(targets), method=method, out_size=(4, 4)).cams
    up = F.interpolate(normalize_per_image(low)[:, None], size=(64, 64), mode="bilinear")[:, 0]
    torch.testing.assert_close(normalize_per_image(up), ref, atol=1e-4, rtol=0)


def test_logprob_matches_pytorch_grad_cam_softmax_target(resnet: nn.Module, batch: torch.Tensor) -> None:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    targets = [3, 2, 1, 0]
    ref_model = copy.deepcopy(resnet)
    with pytorch_grad_cam.GradCAM(model=ref_model, target_layers=[ref_model.layer4[-1]]) as cam:
        ref = torch.from_numpy(cam(input_tensor=batch, targets=[ClassifierOutputSoftmaxTarget(t) for t in targets]))
    # d log p = d p / p: the same map up to a positive per-image factor, which min-max scaling removes.
    low = compute_cam(resnet, batch, "layer4", targets=torch.tensor(targets), out_size=(4, 4), score="logprob").cams
    up = F.interpolate(normalize_per_image(low)[:, None], size=(64, 64), mode="bilinear")[:, 0]
    torch.testing.assert_close(normalize_per_image(up), ref, atol=1e-4, rtol=0)
    logit = compute_cam(resnet, batch, "layer4", targets=torch.tensor(targets), out_size=(4, 4)).cams
    assert not torch.allclose(normalize_per_image(low), normalize_per_image(logit), atol=1e-3)


def test_logprob_sees_a_cue_that_only_suppresses_the_rival() -> None:
    """Channel 0 fires on the left half and raises class 0; channel 1 fires on the right half and only
    lowers class 1. The prediction is class 0 partly thanks to channel 1, which the logit's gradient
    cannot show and the log-probability's gradient must."""
    head = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
    model = nn.Sequential(_SplitChannels(), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()
    x = torch.ones(1, 1, 4, 4)
    x[..., 2:] = 2.0
    target = torch.tensor([0])
    logit_map = compute_cam(model, x, "1", targets=target, out_size=(4, 4)).cams[0]
    logprob_map = compute_cam(model, x, "1", targets=target, out_size=(4, 4), score="logprob").cams[0]
    assert torch.all(logit_map[:, 2:] == 0) and torch.all(logit_map[:, :2] > 0)
    assert torch.all(logprob_map[:, 2:] > 0)
    # Hand value: p = softmax([a0, -a1]) with channel means a0 = 0.5, a1 = 1.0 (pooled over 16 cells);
    # weight_k = dlogp0/da_k / 16 = ([1, 0] - p0 * [1, 0] - p1 * [0, -1]) / 16 = [p1, p1] / 16.
    p1 = torch.softmax(torch.tensor([0.5, -1.0]), 0)[1]
    torch.testing.assert_close(logprob_map[0, 0], p1 / 16 * 1.0)
    torch.testing.assert_close(logprob_map[0, 3], p1 / 16 * 2.0)


class _SplitChannels(nn.Module):
    """(N, 1, H, W) -> (N, 2, H, W): channel 0 is the input on the left half, channel 1 on the right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[-1] // 2
        left, right = x.clone(), x.clone()
        left[..., w:] = 0
        right[..., :w] = 0
        return torch.cat([left, right], 1)


@pytest.mark.parametrize("score", CAM_SCORES.names())
@pytest.mark.parametrize("method", ["cam", "gradcam", "gradcampp"])
def test_batch_equals_one_at_a_time_with_per_sample_targets(
    resnet: nn.Module, batch: torch.Tensor, method: str, score: str
) -> None:
    targets = torch.tensor([2, 0, 3, 1])
    res = compute_cam(resnet, batch, "layer4", targets=targets, method=method, score=score)
    for i in range(len(batch)):
        one = compute_cam(resnet, batch[i : i + 1], "layer4", targets=targets[i : i + 1], method=method, score=score)
        torch.testing.assert_close(res.cams[i : i + 1], one.cams, atol=1e-6, rtol=1e-4)
    # Different targets give different maps: the per-sample selection is really used.
    other = compute_cam(resnet, batch, "layer4", targets=torch.tensor([0, 0, 0, 0]), method=method, score=score)
    assert not torch.allclose(res.cams[0], other.cams[0])


def test_bad_input_raises(resnet: nn.Module, batch: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="not a submodule"):
        compute_cam(resnet, batch, "layer9")
    with pytest.raises(ValueError, match="targets must have shape"):
        compute_cam(resnet, batch, "layer4", targets=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        compute_cam(resnet, batch[0], "layer4")
    with pytest.raises(ValueError, match="gradcam"):
        compute_cam(resnet, batch, "layer4", method="nope")


def test_autocast_gives_float32_cams(resnet: nn.Module, batch: torch.Tensor) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res = compute_cam(resnet, batch, "layer4")
    assert res.cams.dtype == torch.float32 and bool((res.cams >= 0).all())
    full = compute_cam(resnet, batch, "layer4", targets=res.targets).cams
    assert F.cosine_similarity(res.cams.flatten(1), full.flatten(1)).min() > 0.9


def test_normalize_per_image() -> None:
    cams = torch.tensor([[[0.0, 2.0], [1.0, 4.0]], [[3.0, 3.0], [3.0, 3.0]]])
    out = normalize_per_image(cams)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]), atol=1e-6, rtol=0)
    assert bool((out[1] == 0).all())  # a flat map scales to zeros, not NaN


@pytest.mark.parametrize("score", CAM_SCORES.names())
def test_cam_is_gradcam_times_cells_for_a_gap_linear_head(resnet: nn.Module, batch: torch.Tensor, score: str) -> None:
    """For GAP + linear, dS/dA_k(i, j) = dS/dz_k / (h w) for any score S: Grad-CAM's mean gradient is
    CAM's weight over h w, so the maps (and every audit metric) agree up to that constant."""
    targets = torch.tensor([3, 0, 2, 1])
    cam = compute_cam(resnet, batch, "layer4", targets, method="cam", out_size=(4, 4), score=score).cams
    grad = compute_cam(resnet, batch, "layer4", targets, method="gradcam", out_size=(4, 4), score=score).cams
    torch.testing.assert_close(cam, grad * 16, atol=1e-5 * float(cam.max()), rtol=1e-4)
    assert cam.max() > 0


def test_cam_matches_hand_computation_with_fc_weights(resnet: nn.Module, batch: torch.Tensor) -> None:
    targets = torch.tensor([1, 2, 3, 0])
    res = compute_cam(resnet, batch, "layer4", targets, method="cam", out_size=(4, 4))
    acts = {}
    handle = resnet.layer4.register_forward_hook(lambda _m, _i, out: acts.setdefault("a", out))
    with torch.no_grad():
        resnet(batch)
    handle.remove()
    expected = F.relu(torch.einsum("nk,nkhw->nhw", resnet.fc.weight[targets], acts["a"]))  # Zhou et al., eq. 1
    torch.testing.assert_close(res.cams, expected, atol=1e-5, rtol=1e-4)


def test_cam_refuses_a_layer_that_does_not_feed_the_pooled_head(resnet: nn.Module, batch: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="channels but the head takes"):
        compute_cam(resnet, batch, "layer3", method="cam")
    with pytest.raises(ValueError, match="does not reproduce"):  # right width, but not what the head pools
        compute_cam(resnet, batch, "layer4.0", method="cam")

