"""Class activation maps that stay in torch and cost about one forward pass.

One registry of methods (``CAM_METHODS``) in the template-method style of pytorch-grad-cam's
``BaseCAM``: :class:`CamMethod` does the hook, the per-sample target selection, the gradient, the
ReLU and the upsampling; a method overrides only :meth:`CamMethod.channel_weights`.

Why it is fast (pytorch-grad-cam runs ``loss.backward()`` over the whole model and round-trips to
numpy on every call):

* every parameter temporarily gets ``requires_grad=False``, so the part of the network before the
  target layer records no autograd graph at all and no parameter ``.grad`` is ever filled;
* a forward hook replaces the target layer's output by a detached leaf that requires grad, so only
  the (small) suffix after the layer -- for a ResNet: average pool and the linear head -- is
  recorded;
* ``torch.autograd.grad`` of the per-sample target scores (``CAM_SCORES``) with respect to that leaf is
  one backward through the suffix only. Summing the scores over the batch is exact because, in eval
  mode, sample ``i``'s score does not depend on sample ``j``'s activations.

Everything stays on the input's device; nothing is copied to the CPU.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lungaudit.registry import Registry

CAM_METHODS: Registry = Registry("CAM method")
CAM_SCORES: Registry = Registry("CAM target score")


@CAM_SCORES.register("logit")
def logit_score(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The target class's logit (Selvaraju et al.; pytorch-grad-cam's ``ClassifierOutputTarget``)."""
    return logits.gather(1, targets[:, None])[:, 0]


@CAM_SCORES.register("logprob")
def logprob_score(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The target class's log-probability: its logit minus the others' log-sum-exp.

    A cue can win a class the decision by *lowering* a rival's logit (a "Normal" corner token that
    suppresses the disease classes); the logit's own gradient never sees it, the log-probability's
    does, weighted by the rival's probability. Up to a per-image factor 1/p this is pytorch-grad-cam's
    ``ClassifierOutputSoftmaxTarget``, and energy shares are scale-free, so the audit's metrics equal
    that target's.
    """
    return torch.log_softmax(logits.float(), 1).gather(1, targets[:, None])[:, 0]


@dataclass(frozen=True)
class CamResult:
    """Output of :func:`compute_cam`.

    ``logits`` (N, C) as returned by the model; ``cams`` (N, H, W) float32, non-negative, NOT
    normalised (see :func:`normalize_per_image`); ``targets`` (N,) int64, the explained class per sample.
    """

    logits: torch.Tensor
    cams: torch.Tensor
    targets: torch.Tensor


@contextlib.contextmanager
def _frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and ``requires_grad=False`` on all parameters; both restored exactly, even on errors.

    Eval mode is required, not cosmetic: train-mode BatchNorm mixes batch statistics, which would
    make one sample's score depend on the others and the batched gradient wrong.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    # Per-module flags, not model.train(was_training): a caller may keep some submodules (frozen
    # BatchNorm) in a different mode from their parent.
    training = [m for m in model.modules() if m.training]
    try:
        for p in params:
            p.requires_grad_(False)
        for m in training:
            m.training = False
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
        for m in training:
            m.training = True


class CamMethod:
    """Template for gradient-weighted CAMs: subclasses override :meth:`channel_weights` only."""

    name: str = ""

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """(N, K, h, w) float32 activations and gradients -> (N, K) channel weights."""
        raise NotImplementedError

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        target_layer: str,
        targets: torch.Tensor | Sequence[int] | None = None,
        out_size: tuple[int, int] | None = None,
        score: str = "logit",
    ) -> CamResult:
        score_fn = CAM_SCORES.get(score)
        if x.ndim != 4:
            raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
        try:
            layer = model.get_submodule(target_layer)
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n][:12]
            raise ValueError(
                f"target_layer {target_layer!r} is not a submodule of {type(model).__name__}; "
                f"e.g. {', '.join(names)}"
            ) from None
        n = x.shape[0]
        if targets is not None:
            targets = torch.as_tensor(targets, dtype=torch.long, device=x.device)
            if targets.shape != (n,):
                raise ValueError(f"targets must have shape ({n},), got {tuple(targets.shape)}")
        out_size = tuple(x.shape[-2:]) if out_size is None else tuple(out_size)  # type: ignore[assignment]

        captured: list[torch.Tensor] = []

        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
            if not isinstance(output, torch.Tensor):
                raise ValueError(f"target_layer {target_layer!r} must return a tensor, got {type(output).__name__}")
            # A leaf cut here: nothing before the layer joins the graph, the suffix is recorded.
            leaf = output.detach().requires_grad_(True)
            captured.append(leaf)
            return leaf

        handle = layer.register_forward_hook(hook)
        try:
            with _frozen_eval(model), torch.enable_grad():
                logits = model(x.detach())
                if len(captured) != 1:
                    raise ValueError(
                        f"target_layer {target_layer!r} ran {len(captured)} times in one forward; need exactly once"
                    )
                (act,) = captured
                if logits.ndim != 2 or logits.shape[0] != n:
                    raise ValueError(f"model must return (N, C) logits, got shape {tuple(logits.shape)}")
                if targets is None:
                    targets = logits.detach().argmax(1)
                elif bool(((targets < 0) | (targets >= logits.shape[1])).any()):
                    raise ValueError(f"targets must lie in [0, {logits.shape[1]}), got {targets.tolist()}")
                (grad,) = torch.autograd.grad(score_fn(logits, targets).sum(), act)
        finally:
            handle.remove()

        if act.ndim != 4:
            raise ValueError(f"target_layer {target_layer!r} output must be (N, K, h, w), got {tuple(act.shape)}")
        # float32 whatever autocast produced (fp16 squares/cubes in Grad-CAM++ underflow), and with the
        # caller's autocast off, or the einsum below would drop back to half precision.
        with torch.autocast(device_type=x.device.type, enabled=False):
            a, g = act.detach().float(), grad.float()
            w = self.channel_weights(a, g)
            cams = F.relu(torch.einsum("nk,nkhw->nhw", w, a))
            if cams.shape[-2:] != out_size:
                cams = F.interpolate(cams[:, None], size=out_size, mode="bilinear", align_corners=False)[:, 0]
                cams = cams.clamp_min_(0.0)  # bilinear of non-negative values is non-negative; guard rounding
        return CamResult(logits=logits.detach(), cams=cams, targets=targets)


@CAM_METHODS.register("gradcam")
class GradCAM(CamMethod):
    """Grad-CAM (Selvaraju et al. 2017): weights are the spatial mean of the gradients."""

    name = "gradcam"

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients.mean(dim=(2, 3))


@CAM_METHODS.register("gradcampp")
class GradCAMPlusPlus(CamMethod):
    """Grad-CAM++ (Chattopadhay et al. 2018, eq. 19), as in pytorch-grad-cam's ``GradCAMPlusPlus``."""

    name = "gradcampp"

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        g2 = gradients.pow(2)
        g3 = g2 * gradients
        sum_a = activations.sum(dim=(2, 3), keepdim=True)
        alpha = g2 / (2 * g2 + sum_a * g3 + 1e-6)
        alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
        return (F.relu(gradients) * alpha).sum(dim=(2, 3))


def compute_cam(
    model: nn.Module,
    x: torch.Tensor,
    target_layer: str,
    targets: torch.Tensor | Sequence[int] | None = None,
    method: str = "gradcam",
    out_size: tuple[int, int] | None = None,
    score: str = "logit",
) -> CamResult:
    """CAMs for a batch, one target class per sample, in about the time of one forward pass.

    Args:
        model: classifier returning (N, C) logits. It is run in eval mode (restored afterwards).
        x: (N, C_in, H, W) input on the model's device.
        target_layer: dotted submodule name (``"layer4"``), resolved with ``model.get_submodule``.
            Its output must be (N, K, h, w), produced once per forward and not modified in place later.
        targets: (N,) class per sample; ``None`` explains the predicted (argmax) class.
        method: a name in ``CAM_METHODS.names()``.
        out_size: (H, W) of the returned maps; default the input's spatial size.
        score: a name in ``CAM_SCORES.names()``, the per-sample score whose gradient weighs the
            channels: ``logit`` (classic Grad-CAM) or ``logprob``.

    Returns:
        :class:`CamResult` with ``logits`` (N, C), ``cams`` (N, H, W) float32 ReLU'd and bilinearly
        upsampled but not normalised, ``targets`` (N,) int64 -- all on ``x.device``.

    No parameter ``.grad`` is written and all ``requires_grad`` flags and module modes are restored.
    """
    return CAM_METHODS.get(method)()(model, x, target_layer, targets=targets, out_size=out_size, score=score)


def normalize_per_image(cams: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Min-max scale each (H, W) map of (N, H, W) to [0, 1] (pytorch-grad-cam's convention); for display."""
    if cams.ndim != 3:
        raise ValueError(f"cams must be (N, H, W), got shape {tuple(cams.shape)}")
    flat = cams.flatten(1)
    lo = flat.min(1).values[:, None, None]
    hi = flat.max(1).values[:, None, None]
    return (cams - lo) / (hi - lo + eps)


__all__ = ["CAM_METHODS", "CAM_SCORES", "CamMethod", "CamResult", "GradCAM", "GradCAMPlusPlus", "compute_cam", "normalize_per_image"]
