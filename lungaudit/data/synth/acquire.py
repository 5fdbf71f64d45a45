"""Step 3: acquisition - each source's exposure curve, noise level and border style, and its name."""

from __future__ import annotations

import numpy as np

URL_ROOT = "https://synthetic.lungaudit"

# Per-source acquisition: (gamma, gain, offset, noise sigma, border style). Styles: 0 none,
# 1 black padding band on the left, 2 dark collimation frame, 3 black padding band on the right.
SOURCE_STYLES: tuple[tuple[float, float, float, float, int], ...] = (
    (1.00, 1.00, 0.00, 0.015, 0),
    (0.80, 0.92, 0.05, 0.035, 1),
    (1.25, 1.05, -0.02, 0.025, 2),
    (0.90, 0.95, 0.03, 0.020, 3),
    (1.15, 1.00, 0.00, 0.030, 2),
    (0.85, 1.05, -0.03, 0.040, 1),
)


def source_name(i: int) -> str:
    """``source-A``, ``source-B``, ... for source index ``i`` (0-based)."""
    return f"source-{chr(ord('A') + i)}"


def source_url(i: int) -> str:
    """The URL the metadata workbook gives for source ``i``; the loader turns it back into a name."""
    return f"{URL_ROOT}/{source_name(i)}"


def acquire(rng: np.random.Generator, dens: np.ndarray, source: int) -> np.ndarray:
    """Expose float density ``(s, s)`` as ``source`` would: uint8 ``(s, s)`` with its noise and border."""
    s = dens.shape[0]
    gamma, gain, offset, sigma, style = SOURCE_STYLES[source % len(SOURCE_STYLES)]
    img = np.clip(dens, 0, 1) ** gamma * gain + offset
    img = img + rng.normal(0, sigma, img.shape).astype(np.float32)
    band = max(2, round(0.045 * s))
    if style == 1:
        img[:, :band] = 0
    elif style == 3:
        img[:, s - band :] = 0
    elif style == 2:
        frame = np.ones((s, s), np.float32)
        frame[:band, :] = frame[-band:, :] = frame[:, :band] = frame[:, -band:] = 0.25
        img = img * frame
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
