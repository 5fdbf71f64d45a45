"""The public entry to explanation maps: ``compute_cam`` over the full ``CAM_METHODS`` registry.

Importing this module registers every method (the CAMs in :mod:`.cams`, the input-gradient methods in
:mod:`.gradients`, occlusion and LIME in :mod:`.perturbation`); the template and the registries live
in :mod:`.base`. The audit and the scripts import from here:
``from lungaudit.explain.cam import CAM_METHODS, CAM_SCORES, compute_cam, normalize_per_image, CamResult``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from lungaudit.explain import cams, gradients, perturbation  # noqa: F401  (registration)
from lungaudit.explain.base import (
    CAM_METHODS,
    CAM_SCORES,
    CamResult,
    ExplainMethod,
    MethodInfo,
    build_method,
    method_info,
    method_options,
    normalize_per_image,
)
from lungaudit.explain.cams import GradCAM, GradCAMPlusPlus, GradientCam
from lungaudit.explain.verdicts import apply_verdicts

apply_verdicts()  # the recorded sanity verdicts into MethodInfo.sanity (measured methods only)


def compute_cam(
    model: nn.Module,
    x: torch.Tensor,
    target_layer: str,
    targets: torch.Tensor | Sequence[int] | None = None,
    method: str = "gradcam",
    out_size: tuple[int, int] | None = None,
    score: str = "logit",
    options: Mapping[str, Any] | None = None,
) -> CamResult:
    """Explanation maps for a batch, one target class per sample, with any registered method.

    Args:
        model: classifier returning (N, C) logits. It is run in eval mode with frozen parameters
            (both restored afterwards; no parameter ``.grad`` is written).
        x: (N, C_in, H, W) float input on the model's device.
        target_layer: dotted submodule name (``"layer4"``) for methods whose ``info.needs_target_layer``;
            its output must be (N, K, h, w), produced once per forward. Unused by the others.
        targets: (N,) class per sample; ``None`` explains the predicted (argmax) class.
        method: a name in ``CAM_METHODS.names()`` (see ``method_info(name)`` for kind and cost).
        out_size: (H, W) of the returned maps; default the input's spatial size.
        score: a name in ``CAM_SCORES.names()``, the per-sample score explained: ``logit`` or
            ``logprob``.
        options: keyword arguments of the method's constructor (``{"n_steps": 16}``); ``None`` gives
            its documented defaults.

    Returns:
        :class:`CamResult`: ``logits`` (N, C) of the plain input, ``cams`` (N, H, W) float32 >= 0 and
        not normalised, ``targets`` (N,) int64 -- all on ``x.device``.
    """
    return build_method(method, options)(model, x, target_layer, targets=targets, out_size=out_size, score=score)


__all__ = [
    "CAM_METHODS",
    "CAM_SCORES",
    "CamResult",
    "ExplainMethod",
    "GradCAM",
    "GradCAMPlusPlus",
    "GradientCam",
    "MethodInfo",
    "build_method",
    "compute_cam",
    "method_info",
    "method_options",
    "normalize_per_image",
]
