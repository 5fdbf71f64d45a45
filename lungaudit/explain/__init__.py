"""Explain: heatmaps from one registry of methods (Grad-CAM by default).

The names below load on first use (PEP 562), so ``import lungaudit`` does not pay for torch.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = ("CAM_METHODS", "CAM_SCORES", "CamMethod", "CamResult", "compute_cam", "normalize_per_image")


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from lungaudit.explain import cam

        return getattr(cam, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_EXPORTS)
