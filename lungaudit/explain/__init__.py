"""Explain: CAM heatmaps from one registry of methods (Grad-CAM by default)."""

from lungaudit.explain.cam import CAM_METHODS, CamMethod, CamResult, compute_cam, normalize_per_image

__all__ = ["CAM_METHODS", "CamMethod", "CamResult", "compute_cam", "normalize_per_image"]
