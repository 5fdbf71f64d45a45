"""Class activation maps read at a target layer: CAM, Grad-CAM, Grad-CAM++ and Score-CAM.

Why the gradient CAMs cost about one forward pass (pytorch-grad-cam runs ``loss.backward()`` over the
whole model and round-trips to numpy on every call):

* every parameter is frozen for the call (:func:`~lungaudit.explain.base.frozen_eval`), so the part
  of the network before the target layer records no autograd graph and no ``.grad`` is filled;
* a forward hook replaces the target layer's output by a detached leaf that requires grad, so only
  the (small) suffix after the layer -- for a ResNet: average pool and the linear head -- is recorded;
* ``torch.autograd.grad`` of the per-sample target scores (``CAM_SCORES``) with respect to that leaf is
  one backward through the suffix only. Summing the scores over the batch is exact because, in eval
  mode, sample ``i``'s score does not depend on sample ``j``'s activations.

CAM needs no backward through the network at all and Score-CAM none at all; everything stays on the
input's device.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from lungaudit.explain.base import (
    Attribution,
    ExplainMethod,
    MethodInfo,
    Query,
    check_positive_int,
    chunked_scores,
    register_method,
    resolve_layer,
)


@contextlib.contextmanager
def capture_layer(layer: nn.Module, name: str, as_leaf: bool) -> Iterator[list[torch.Tensor]]:
    """Collect the layer's (N, K, h, w) output during the ``with`` block.

    ``as_leaf``: replace the output by a detached leaf that requires grad, so autograd records only
    the suffix after the layer (the Grad-CAM speed trick). The list holds one tensor per call.
    """
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor | None:
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(f"target_layer {name!r} output must be a (N, K, h, w) tensor, got {shape}")
        if as_leaf:
            output = output.detach().requires_grad_(True)
        captured.append(output)
        return output if as_leaf else None

    handle = layer.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def layer_forward(q: Query, as_leaf: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward of ``q.x`` capturing the target layer: (N, C) logits and (N, K, h, w) activations.

    With ``as_leaf`` the call records the suffix's graph (grad enabled even under a caller's
    ``no_grad``); without, it runs under ``no_grad``.
    """
    assert q.layer is not None
    with capture_layer(q.layer, q.layer_name, as_leaf) as captured:
        with torch.enable_grad() if as_leaf else torch.no_grad():
            logits = q.model(q.x)
    if len(captured) != 1:
        raise ValueError(f"target_layer {q.layer_name!r} ran {len(captured)} times in one forward; need exactly once")
    return logits, captured[0]


class GradientCam(ExplainMethod):
    """Template for gradient-weighted CAMs: subclasses override :meth:`channel_weights` only."""

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """(N, K, h, w) float32 activations and gradients -> (N, K) channel weights."""
        raise NotImplementedError

    def attribute(self, q: Query) -> Attribution:
        logits, act = layer_forward(q, as_leaf=True)
        targets = q.resolve_targets(logits)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(q.score_fn(logits, targets).sum(), act)
        # float32 whatever autocast produced (fp16 squares/cubes in Grad-CAM++ underflow), and with the
        # caller's autocast off, or the einsum would drop back to half precision.
        with torch.autocast(device_type=q.x.device.type, enabled=False):
            a, g = act.detach().float(), grad.float()
            maps = torch.einsum("nk,nkhw->nhw", self.channel_weights(a, g), a)
        return Attribution(logits.detach(), targets, maps)


@register_method(
    "gradcam",
    MethodInfo(
        kind="cam",
        needs_target_layer=True,
        cost="1 forward + a backward through the layers after the target layer only",
        forwards=1.05,
        paper="Selvaraju et al. 2017, Grad-CAM (ICCV)",
        reference="pytorch-grad-cam GradCAM; Captum LayerGradCam",
        nonneg="relu",
    ),
)
class GradCAM(GradientCam):
    """Grad-CAM: channel weights are the spatial mean of the score's gradient; ReLU of the weighted sum."""

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients.mean(dim=(2, 3))


@register_method(
    "gradcampp",
    MethodInfo(
        kind="cam",
        needs_target_layer=True,
        cost="as gradcam",
        forwards=1.05,
        paper="Chattopadhay et al. 2018, Grad-CAM++ (WACV), eq. 19",
        reference="pytorch-grad-cam GradCAMPlusPlus",
        nonneg="relu",
    ),
)
class GradCAMPlusPlus(GradientCam):
    """Grad-CAM++ with the exp-score closed form of its alphas, as pytorch-grad-cam computes it."""

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        g2 = gradients.pow(2)
        g3 = g2 * gradients
        sum_a = activations.sum(dim=(2, 3), keepdim=True)
        alpha = g2 / (2 * g2 + sum_a * g3 + 1e-6)
        alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
        return (F.relu(gradients) * alpha).sum(dim=(2, 3))


def _linear_head(model: nn.Module, head: str | None) -> nn.Linear:
    """The named linear head, or the model's last ``nn.Linear`` (ResNet's ``fc``)."""
    if head is not None:
        module = resolve_layer(model, head)
    else:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        module = linears[-1] if linears else None
    if not isinstance(module, nn.Linear):
        raise ValueError(
            "cam needs a global-average-pool + nn.Linear head (Zhou et al.); this model has none: use gradcam"
        )
    return module


@register_method(
    "cam",
    MethodInfo(
        kind="cam",
        needs_target_layer=True,
        cost="1 forward, no backward through the network",
        forwards=1.0,
        paper="Zhou et al. 2016, Learning Deep Features for Discriminative Localization (CVPR)",
        reference="hand computation (fc weights x activations); equals gradcam x h*w for the logit score",
        nonneg="relu",
    ),
)
class CAM(ExplainMethod):
    """CAM: the target class's weights of the linear head after global average pooling, times the maps.

    For a GAP + linear head, Grad-CAM's channel weight is exactly ``W[c, k] / (h * w)``, so for the
    ``logit`` score CAM equals Grad-CAM times ``h * w``: the same map, the same audit metrics. It is
    kept because it costs no backward through the network and is what the seed work showed. For other
    scores the weights are the score's gradient with respect to the pooled features (``W[c]`` for the
    logit), computed through the head alone. The target layer must feed the head through a global
    average pool; that is checked (head(mean(A)) must reproduce the logits) and a ValueError says so.

    Options: ``head`` -- dotted name of the linear head; default the model's last ``nn.Linear``.
    """

    def __init__(self, head: str | None = None) -> None:
        self.head = head

    def attribute(self, q: Query) -> Attribution:
        logits, act = layer_forward(q, as_leaf=False)
        targets = q.resolve_targets(logits)
        head = _linear_head(q.model, self.head)
        with torch.autocast(device_type=q.x.device.type, enabled=False):
            a = act.float()
            if head.in_features != a.shape[1]:
                raise ValueError(
                    f"cam: target_layer {q.layer_name!r} has {a.shape[1]} channels but the head takes "
                    f"{head.in_features} features; pick the layer that feeds the pooled head"
                )
            pooled = a.mean(dim=(2, 3)).detach().requires_grad_(True)
            with torch.enable_grad():
                head_logits = F.linear(pooled, head.weight.float(), None if head.bias is None else head.bias.float())
                (w,) = torch.autograd.grad(q.score_fn(head_logits, targets).sum(), pooled)
            _check_gap_head(head_logits.detach(), logits.detach().float(), q.layer_name)
            maps = torch.einsum("nk,nkhw->nhw", w, a)
        return Attribution(logits.detach(), targets, maps)


def _check_gap_head(head_logits: torch.Tensor, logits: torch.Tensor, layer_name: str) -> None:
    """ValueError unless head(GAP(layer output)) reproduces the model's (N, C) logits."""
    scale = float(logits.abs().max().clamp_min(1.0))
    tol = 1e-3 if logits.dtype == torch.float32 else 5e-2  # half-precision autocast logits
    if head_logits.shape != logits.shape or not torch.allclose(head_logits, logits, rtol=tol, atol=tol * scale):
        raise ValueError(
            f"cam: the head applied to the global average of {layer_name!r} does not reproduce the model's logits; "
            "CAM needs target_layer -> global average pool -> linear head (use gradcam otherwise)"
        )


@register_method(
    "scorecam",
    MethodInfo(
        kind="cam",
        needs_target_layer=True,
        cost="1 + top_k forwards per image (33 at the default top_k=32), no backward",
        forwards=33.0,
        paper="Wang et al. 2020, Score-CAM (CVPR workshops)",
        reference="pytorch-grad-cam ScoreCAM (with top_k=None)",
        nonneg="relu",
    ),
)
class ScoreCAM(ExplainMethod):
    """Score-CAM: gradient-free; a channel's weight is the score of the input masked by that channel.

    Each selected channel map is upsampled to the input (bilinear, corners aligned as in the
    reference), min-max scaled to [0, 1] and multiplied into the input; the weights are the softmax
    over channels of the masked inputs' target scores, and the map is ReLU(sum_k w_k A_k) at layer
    resolution.

    Options: ``top_k`` (default 32) -- only the k channels with the largest spatial-mean activation
    of each image are scored (``None``: all K, as the paper; 512 forwards per image for a ResNet-18).
    The softmax is shift-invariant, so dropping a channel only removes its (low-activation) term;
    ``batch`` (default 128) -- masked images per forward, the memory bound.
    """

    def __init__(self, top_k: int | None = 32, batch: int = 128) -> None:
        check_positive_int("top_k", top_k, allow_none=True)
        check_positive_int("batch", batch)
        self.top_k, self.batch = top_k, batch

    def attribute(self, q: Query) -> Attribution:
        logits, act = layer_forward(q, as_leaf=False)
        targets = q.resolve_targets(logits)
        with torch.autocast(device_type=q.x.device.type, enabled=False):
            a = act.float()
            n, k_all, h, w = a.shape
            k = k_all if self.top_k is None else min(self.top_k, k_all)
            idx = a.mean(dim=(2, 3)).topk(k, dim=1).indices  # (N, k)
            sel = a.gather(1, idx[:, :, None, None].expand(-1, -1, h, w))  # (N, k, h, w)
            up = F.interpolate(sel, size=q.x.shape[-2:], mode="bilinear", align_corners=True)
            lo = up.amin(dim=(2, 3), keepdim=True)
            hi = up.amax(dim=(2, 3), keepdim=True)
            masks = (up - lo) / (hi - lo + 1e-8)  # (N, k, H, W)

        def masked(rows: torch.Tensor) -> torch.Tensor:
            i, j = rows // k, rows % k
            return q.x[i] * masks[i, j][:, None].to(q.x.dtype)

        scores = chunked_scores(q.model, n * k, masked, targets.repeat_interleave(k), q.score_fn, self.batch)
        weights = torch.softmax(scores.view(n, k), dim=1)
        maps = torch.einsum("nk,nkhw->nhw", weights, sel)
        return Attribution(logits.detach(), targets, maps)


__all__ = ["CAM", "GradCAM", "GradCAMPlusPlus", "GradientCam", "ScoreCAM", "capture_layer", "layer_forward"]
