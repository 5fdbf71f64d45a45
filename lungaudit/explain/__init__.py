"""Explain: one registry of explanation methods (CAMs, input gradients, perturbations), their
sanity checks (Adebayo et al.) and feature-space views. Grad-CAM is the audit's default."""

from lungaudit.explain.cam import (
    CAM_METHODS,
    CAM_SCORES,
    CamResult,
    ExplainMethod,
    MethodInfo,
    compute_cam,
    method_info,
    normalize_per_image,
)

__all__ = [
    "CAM_METHODS",
    "CAM_SCORES",
    "CamResult",
    "ExplainMethod",
    "MethodInfo",
    "compute_cam",
    "method_info",
    "normalize_per_image",
]
