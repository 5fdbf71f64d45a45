"""Input-gradient methods: saliency, gradient x input, SmoothGrad, integrated gradients, guided
backpropagation and guided Grad-CAM.

All share one fast path instead of Captum's per-call machinery: parameters are frozen for the call
(:func:`~lungaudit.explain.base.frozen_eval`), so a backward computes input gradients only, never a
weight gradient; the per-sample target scores are summed over the batch (exact in eval mode) and
differentiated with one ``torch.autograd.grad``; the many inputs of SmoothGrad and integrated
gradients (noise samples, path steps) are rows of one expanded batch, ``batch`` rows per
forward/backward pass, and accumulated into (N, C, H, W) as they go, so memory does not grow with the
number of steps. Every method is tested against its Captum counterpart.

Gradient signs say in which direction a pixel would move the score, not whether it is evidence for
or against the class, so these maps are reduced with ``abs`` (the magnitude summed over input
channels, Captum's ``Saliency(abs=True)`` convention).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lungaudit.explain.base import Attribution, ExplainMethod, MethodInfo, Query, check_positive_int, register_method
from lungaudit.explain.cams import GradCAM, capture_layer


def gradient_pass(q: Query, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward + input backward: (N, C) logits, (N,) targets and the (N, C_in, H, W) score gradient."""
    leaf = (q.x if x is None else x).detach().requires_grad_(True)
    with torch.enable_grad():
        logits = q.model(leaf)
        targets = q.resolve_targets(logits)
        (grad,) = torch.autograd.grad(q.score_fn(logits, targets).sum(), leaf)
    return logits.detach(), targets, grad


def accumulate_input_gradients(
    q: Query,
    n_rows: int,
    make_inputs: Callable[[torch.Tensor], torch.Tensor],
    row_targets: torch.Tensor,
    row_weights: torch.Tensor,
    batch: int,
    magnitude: bool,
) -> torch.Tensor:
    """sum over rows r of image ``r % N``: ``row_weights[r] * g_r`` (``|g_r|`` with ``magnitude``).

    Rows are the expanded inputs (noise sample or path step s, image i) laid out ``r = s * N + i``;
    ``make_inputs`` maps (B,) row indices to (B, C, H, W) inputs, ``batch`` rows per pass. Returns
    (N, C, H, W) float32.
    """
    n = q.x.shape[0]
    total = torch.zeros(q.x.shape, dtype=torch.float32, device=q.x.device)
    for start in range(0, n_rows, batch):
        rows = torch.arange(start, min(start + batch, n_rows), device=q.x.device)
        leaf = make_inputs(rows).detach().requires_grad_(True)
        with torch.enable_grad():
            logits = q.model(leaf)
            (g,) = torch.autograd.grad(q.score_fn(logits, row_targets[rows]).sum(), leaf)
        g = g.float().abs() if magnitude else g.float()
        total.index_add_(0, rows % n, g * row_weights[rows].view(-1, 1, 1, 1))
    return total


def plain_logits(q: Query) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) logits of the unmodified input (no grad) and the (N,) targets they resolve to."""
    with torch.no_grad():
        logits = q.model(q.x)
    return logits, q.resolve_targets(logits)


GRADIENT_COST = "1 forward + 1 backward to the input (no weight gradients)"


@register_method(
    "saliency",
    MethodInfo(
        kind="gradient",
        needs_target_layer=False,
        cost=GRADIENT_COST,
        forwards=2.5,
        paper="Simonyan et al. 2014, Deep Inside Convolutional Networks",
        reference="Captum Saliency (abs=True)",
        nonneg="abs",
    ),
)
class Saliency(ExplainMethod):
    """Vanilla gradient: |d score / d x|, summed over input channels."""

    def attribute(self, q: Query) -> Attribution:
        logits, targets, grad = gradient_pass(q)
        return Attribution(logits, targets, grad)


@register_method(
    "gradxinput",
    MethodInfo(
        kind="gradient",
        needs_target_layer=False,
        cost=GRADIENT_COST,
        forwards=2.5,
        paper="Shrikumar et al. 2016, Not Just a Black Box (gradient x input)",
        reference="Captum InputXGradient",
        nonneg="abs",
    ),
)
class GradientXInput(ExplainMethod):
    """Gradient x input: |x * d score / d x| (the first-order Taylor term against a black image)."""

    def attribute(self, q: Query) -> Attribution:
        logits, targets, grad = gradient_pass(q)
        return Attribution(logits, targets, grad * q.x)


@register_method(
    "smoothgrad",
    MethodInfo(
        kind="gradient",
        needs_target_layer=False,
        cost="n_samples x (forward + input backward) + 1 forward (16 samples by default)",
        forwards=41.0,
        paper="Smilkov et al. 2017, SmoothGrad",
        reference="Captum NoiseTunnel(Saliency, nt_type='smoothgrad')",
        nonneg="abs",
    ),
)
class SmoothGrad(ExplainMethod):
    """SmoothGrad: the mean of |gradient| over Gaussian-noised copies of the input.

    Options: ``n_samples`` (16); ``noise_level`` (0.15) -- noise std as a fraction of each image's
    value range (max - min), the paper's 10-20 %; ``seed`` (0) -- the noise is drawn once per call
    from a CPU generator with this seed and shared by every image of the batch, so an image's map does
    not depend on the batch it came in, nor on the device; ``batch`` (64) -- noisy images per pass.
    """

    def __init__(self, n_samples: int = 16, noise_level: float = 0.15, seed: int = 0, batch: int = 64) -> None:
        check_positive_int("n_samples", n_samples)
        check_positive_int("batch", batch)
        if not noise_level >= 0:
            raise ValueError(f"noise_level must be >= 0, got {noise_level!r}")
        self.n_samples, self.noise_level, self.seed, self.batch = n_samples, float(noise_level), seed, batch

    def attribute(self, q: Query) -> Attribution:
        logits, targets = plain_logits(q)
        n = q.x.shape[0]
        gen = torch.Generator().manual_seed(self.seed)
        noise = torch.randn((self.n_samples, *q.x.shape[1:]), generator=gen).to(q.x.device, q.x.dtype)
        span = q.x.flatten(1).amax(1) - q.x.flatten(1).amin(1)
        sigma = (self.noise_level * span).view(n, 1, 1, 1)

        def noisy(rows: torch.Tensor) -> torch.Tensor:
            return q.x[rows % n] + sigma[rows % n] * noise[rows // n]

        rows = self.n_samples * n
        weights = torch.full((rows,), 1.0 / self.n_samples, device=q.x.device)
        total = accumulate_input_gradients(q, rows, noisy, targets.repeat(self.n_samples), weights, self.batch, True)
        return Attribution(logits, targets, total)


def gauss_legendre(n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(alphas, step weights) of the n-point Gauss-Legendre rule on [0, 1] (Captum's default rule)."""
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    return 0.5 * (nodes + 1.0), 0.5 * weights


@register_method(
    "integrated_gradients",
    MethodInfo(
        kind="gradient",
        needs_target_layer=False,
        cost="n_steps x (forward + input backward) + 1 forward (32 steps by default)",
        forwards=81.0,
        paper="Sundararajan et al. 2017, Axiomatic Attribution for Deep Networks",
        reference="Captum IntegratedGradients (gausslegendre)",
        nonneg="abs",
    ),
)
class IntegratedGradients(ExplainMethod):
    """Integrated gradients from a constant baseline: |(x - b) * integral_0^1 grad(b + a (x - b)) da|.

    Options: ``n_steps`` (32) Gauss-Legendre nodes (exact for polynomials of degree 2n-1 along the
    path; Captum's default rule); ``baseline`` (0.0, a black image); ``batch`` (64) path points per
    forward/backward pass -- all steps of all images form one expanded batch, chunked.
    """

    def __init__(self, n_steps: int = 32, baseline: float = 0.0, batch: int = 64) -> None:
        check_positive_int("n_steps", n_steps)
        check_positive_int("batch", batch)
        self.n_steps, self.baseline, self.batch = n_steps, float(baseline), batch

    def attribute(self, q: Query) -> Attribution:
        logits, targets = plain_logits(q)
        n = q.x.shape[0]
        alphas, steps = (
            torch.as_tensor(v, dtype=torch.float32, device=q.x.device) for v in gauss_legendre(self.n_steps)
        )
        delta = q.x - self.baseline

        def on_path(rows: torch.Tensor) -> torch.Tensor:
            a = alphas[rows // n].to(q.x.dtype).view(-1, 1, 1, 1)
            return self.baseline + a * delta[rows % n]

        rows = self.n_steps * n
        total = accumulate_input_gradients(
            q, rows, on_path, targets.repeat(self.n_steps), steps.repeat_interleave(n), self.batch, False
        )
        return Attribution(logits, targets, total * delta.float())


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes only positive gradient where the input was positive, in one step.

    One custom function instead of a ReLU followed by a gradient filter: no copy of each output and
    ReLU's own fused backward kernel (``threshold_backward``) on the clamped gradient. On the demo
    classifier (batch 32, CPU) guided Grad-CAM went from 2.37x to 2.20x Grad-CAM's time.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = torch.relu(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad.clamp_min(0), out, 0)


@contextlib.contextmanager
def guided_relus(model: nn.Module, after: list[bool] | None = None) -> Iterator[None]:
    """Make every ``nn.ReLU`` backpropagate guided gradients: relu(grad) * (input > 0).

    Each ReLU module's ``forward`` is replaced for the duration (an instance attribute, removed on
    exit), so a module used twice in a forward -- torchvision's BasicBlock does -- is guided on both
    uses, and an ``inplace=True`` ReLU computes out of place instead of writing into a tensor autograd
    still needs. ``after``, when given, is a one-flag list set by the caller once the target layer has
    run; a ReLU running after that flips ``after`` to ``[True, True]`` (see guided Grad-CAM).
    ``F.relu`` calls cannot be replaced: a ValueError is raised when the model has no ``nn.ReLU``.
    """
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError("guided backpropagation needs nn.ReLU modules; this model has none (functional relu?)")

    def guided(x: torch.Tensor) -> torch.Tensor:
        if after is not None and after[0]:
            after[1:] = [True]
        return _GuidedReLU.apply(x)

    for m in relus:
        m.forward = guided  # type: ignore[method-assign]
    try:
        yield
    finally:
        for m in relus:
            del m.forward


@register_method(
    "guided_backprop",
    MethodInfo(
        kind="gradient",
        needs_target_layer=False,
        cost=GRADIENT_COST + ", ReLU outputs copied",
        forwards=2.7,
        paper="Springenberg et al. 2015, Striving for Simplicity (guided backpropagation)",
        reference="Captum GuidedBackprop",
        nonneg="abs",
    ),
)
class GuidedBackprop(ExplainMethod):
    """Guided backpropagation: the input gradient with every ReLU passing back only positive gradient."""

    def attribute(self, q: Query) -> Attribution:
        with guided_relus(q.model):
            logits, targets, grad = gradient_pass(q)
        return Attribution(logits, targets, grad)


@register_method(
    "guided_gradcam",
    MethodInfo(
        kind="gradient",
        needs_target_layer=True,
        cost="1 forward + 1 input backward (+1 forward when ReLUs follow the target layer)",
        forwards=2.8,
        paper="Selvaraju et al. 2017, Grad-CAM (guided Grad-CAM)",
        reference="Captum GuidedGradCam (interpolate_mode='bilinear')",
        nonneg="abs",
        yields=("gradcam",),
    ),
)
class GuidedGradCAM(ExplainMethod):
    """Guided Grad-CAM: guided backpropagation times Grad-CAM upsampled (bilinear) to the input.

    One forward serves both: it records the whole graph with guided ReLUs and keeps the target
    layer's output, and one ``autograd.grad`` returns the guided input gradient and the layer
    gradient. That layer gradient is Grad-CAM's only when no ReLU runs after the layer (a ResNet's
    suffix is pool + linear); otherwise Grad-CAM is recomputed on the fast path (+1 forward). The
    Grad-CAM it used comes back as ``also["gradcam"]``, so a caller needing both pays for one pass.
    """

    def attribute(self, q: Query) -> Attribution:
        assert q.layer is not None
        leaf = q.x.detach().requires_grad_(True)
        after = [False]
        with guided_relus(q.model, after), capture_layer(q.layer, q.layer_name, as_leaf=False) as captured:

            def mark(*_args: object) -> None:
                after[0] = True

            marker = q.layer.register_forward_hook(mark)
            try:
                with torch.enable_grad():
                    logits = q.model(leaf)
                    targets = q.resolve_targets(logits)
                    if len(captured) != 1:
                        raise ValueError(f"target_layer {q.layer_name!r} ran {len(captured)} times in one forward")
                    guided, layer_grad = torch.autograd.grad(q.score_fn(logits, targets).sum(), [leaf, captured[0]])
            finally:
                marker.remove()
        with torch.autocast(device_type=q.x.device.type, enabled=False):
            if len(after) > 1:  # a guided ReLU ran after the layer: its gradient is not Grad-CAM's
                gradcam = GradCAM().attribute(_with_targets(q, targets)).maps
            else:
                a = captured[0].detach().float()
                gradcam = torch.einsum("nk,nkhw->nhw", GradCAM().channel_weights(a, layer_grad.float()), a)
            cam = F.interpolate(F.relu(gradcam)[:, None], size=q.x.shape[-2:], mode="bilinear", align_corners=False)
        return Attribution(logits.detach(), targets, guided.float() * cam, also={"gradcam": gradcam})


def _with_targets(q: Query, targets: torch.Tensor) -> Query:
    """The same query with its targets fixed (so a second pass explains the same classes)."""
    return Query(q.model, q.x, q.layer, q.layer_name, targets, q.score_fn)


__all__ = [
    "GradientXInput",
    "GuidedBackprop",
    "GuidedGradCAM",
    "IntegratedGradients",
    "Saliency",
    "SmoothGrad",
    "accumulate_input_gradients",
    "gauss_legendre",
    "gradient_pass",
    "guided_relus",
]
