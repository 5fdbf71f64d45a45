"""Explain: one registry of explanation methods (CAMs, input gradients, perturbations), their sanity
checks (Adebayo et al., :mod:`.sanity`) and feature-space views (:mod:`.features`); Grad-CAM is the
audit's default.

The names below load on first use (PEP 562), so ``import lungaudit`` does not pay for torch.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = (
    "CAM_METHODS",
    "CAM_SCORES",
    "CamResult",
    "ExplainMethod",
    "GradientCam",
    "MethodInfo",
    "build_method",
    "compute_cam",
    "method_info",
    "method_options",
    "normalize_per_image",
)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from lungaudit.explain import cam

        return getattr(cam, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_EXPORTS)
