"""Perturbation methods: occlusion and a LIME-style superpixel surrogate.

Both are black-box (no gradient) and cost many forwards per image; the perturbed copies are rows of
one virtual batch generated ``batch`` rows at a time (:func:`~lungaudit.explain.base.chunked_scores`),
so memory is bounded by ``batch`` whatever the number of windows or samples, and the whole batch of
images is explained together (no per-image Python loop; the LIME surrogate of every image is solved
in one batched linear system on the device).

Captum's ``Occlusion`` and ``Lime`` are the references the tests compare against; ours are used
because Captum's LIME fits one interpretable model per image in a Python loop over samples (with
``.item()`` per feature), and both build their masks window by window in Python.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lungaudit.explain.base import (
    Attribution,
    ExplainMethod,
    MethodInfo,
    Query,
    check_positive_int,
    chunked_scores,
    register_method,
)
from lungaudit.explain.gradients import plain_logits


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets along one axis, as Captum's Occlusion: ceil((size - window) / stride) + 1 of
    them, the last one clipped at the border so every pixel is covered."""
    return [i * stride for i in range(math.ceil((size - window) / stride) + 1)]


def occlusion_masks(height: int, width: int, window: int, stride: int, device: torch.device) -> torch.Tensor:
    """(P, H, W) float {0, 1}: one mask per occluding window position, row-major."""
    if window > min(height, width):
        raise ValueError(f"occlusion window {window} exceeds the image ({height}x{width})")
    if stride > window:
        raise ValueError(f"occlusion stride {stride} must not exceed the window {window} (pixels would be skipped)")
    ys = torch.tensor(window_starts(height, window, stride), device=device)
    xs = torch.tensor(window_starts(width, window, stride), device=device)
    in_y = (torch.arange(height, device=device)[None] >= ys[:, None]) & (
        torch.arange(height, device=device)[None] < ys[:, None] + window
    )  # (Py, H)
    in_x = (torch.arange(width, device=device)[None] >= xs[:, None]) & (
        torch.arange(width, device=device)[None] < xs[:, None] + window
    )  # (Px, W)
    return (in_y[:, None, :, None] & in_x[None, :, None, :]).flatten(0, 1).float()


@register_method(
    "occlusion",
    MethodInfo(
        kind="perturbation",
        needs_target_layer=False,
        cost="1 + P forwards per image, P = window positions (8 x 8 = 64 by default: 65 forwards)",
        forwards=65.0,
        paper="Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks",
        reference="Captum Occlusion",
        nonneg="relu",
    ),
)
class Occlusion(ExplainMethod):
    """Occlusion: a pixel's value is the mean drop of the target score over the windows covering it
    when they are filled with ``baseline``; ReLU keeps the regions whose removal lowers the score.

    Options: ``window`` (default ceil(min(H, W) / 8): 16 px at 128, an 8 x 8 grid like layer4's CAM
    cells); ``stride`` (default ``window``: no overlap; ``window // 2`` gives smoother maps at about 4x
    the cost); ``baseline`` (0.0); ``batch`` (128) occluded images per forward, the memory bound.
    """

    def __init__(
        self, window: int | None = None, stride: int | None = None, baseline: float = 0.0, batch: int = 128
    ) -> None:
        check_positive_int("window", window, allow_none=True)
        check_positive_int("stride", stride, allow_none=True)
        check_positive_int("batch", batch)
        self.window, self.stride, self.baseline, self.batch = window, stride, float(baseline), batch

    def attribute(self, q: Query) -> Attribution:
        logits, targets = plain_logits(q)
        n, _c, h, w = q.x.shape
        window = self.window or math.ceil(min(h, w) / 8)
        masks = occlusion_masks(h, w, window, self.stride or window, q.x.device)  # (P, H, W)
        p = masks.shape[0]

        def occluded(rows: torch.Tensor) -> torch.Tensor:
            m = masks[rows % p][:, None].to(q.x.dtype)
            return q.x[rows // p] * (1 - m) + self.baseline * m

        base = q.score_fn(logits.float(), targets)
        scores = chunked_scores(q.model, n * p, occluded, targets.repeat_interleave(p), q.score_fn, self.batch)
        drop = base[:, None] - scores.view(n, p)  # (N, P)
        maps = torch.einsum("np,phw->nhw", drop, masks) / masks.sum(0)
        return Attribution(logits, targets, maps)


def grid_segments(n: int, height: int, width: int, n_segments: int, device: torch.device) -> torch.Tensor:
    """(N, H, W) int64 labels of a g x g grid, g = round(sqrt(n_segments)), row-major."""
    g = max(1, round(math.sqrt(n_segments)))
    rows = torch.div(torch.arange(height, device=device) * g, height, rounding_mode="floor")
    cols = torch.div(torch.arange(width, device=device) * g, width, rounding_mode="floor")
    return (rows[:, None] * g + cols[None, :]).expand(n, height, width)


def slic_segments(
    x: torch.Tensor, n_segments: int, compactness: float = 0.3, iters: int = 8, work: int = 64
) -> torch.Tensor:
    """(N, C, H, W) -> (N, H, W) int64 superpixel labels in [0, g*g): SLIC-style k-means, batched.

    Pixels are clustered on (intensity, compactness * y / S, compactness * x / S), S the seed grid
    spacing, from a g x g grid of seeds (g = round(sqrt(n_segments))), at a working resolution of at
    most ``work`` px (labels are upsampled nearest), with dense assignment instead of SLIC's local
    search window and without its connectivity post-processing: a label may be split or empty. The
    intensity is each image's channel mean scaled to [0, 1]. No scikit-image needed; on the device.
    """
    n, _c, h, w = x.shape
    g = max(1, round(math.sqrt(n_segments)))
    hs, ws = min(h, work), min(w, work)
    img = F.adaptive_avg_pool2d(x.float().mean(1, keepdim=True), (hs, ws))[:, 0]
    lo = img.flatten(1).amin(1).view(n, 1, 1)
    hi = img.flatten(1).amax(1).view(n, 1, 1)
    img = (img - lo) / (hi - lo).clamp_min(1e-8)
    spacing = math.sqrt(hs * ws / (g * g))
    yy, xx = torch.meshgrid(torch.arange(hs, device=x.device), torch.arange(ws, device=x.device), indexing="ij")
    pos = torch.stack([yy, xx], -1).float().view(1, hs * ws, 2) * (compactness / spacing)
    feats = torch.cat([img.view(n, hs * ws, 1), pos.expand(n, -1, -1)], -1)  # (N, P, 3)
    seeds = grid_segments(1, hs, ws, g * g, x.device).reshape(hs * ws)
    onehot = F.one_hot(seeds, g * g).float()[None].expand(n, -1, -1)  # (N, P, K)
    centers = onehot.transpose(1, 2) @ feats / onehot.sum(1).clamp_min(1)[..., None]  # (N, K, 3)
    for _ in range(iters):
        labels = torch.cdist(feats, centers).argmin(-1)  # (N, P)
        onehot = F.one_hot(labels, g * g).float()
        counts = onehot.sum(1)  # (N, K)
        new = onehot.transpose(1, 2) @ feats / counts.clamp_min(1)[..., None]
        # An emptied cluster keeps its previous centre instead of collapsing to the origin.
        centers = torch.where(counts[..., None] > 0, new, centers)
    labels = torch.cdist(feats, centers).argmin(-1).view(n, 1, hs, ws).float()
    return F.interpolate(labels, size=(h, w), mode="nearest")[:, 0].long()


def lime_samples(n_features: int, n_samples: int, seed: int) -> torch.Tensor:
    """(S, F) float {0, 1}: row 0 keeps every superpixel (the original image, as LIME does), the
    others keep each with probability 1/2; a CPU generator makes them identical on every device."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.bernoulli(torch.full((n_samples, n_features), 0.5), generator=gen)
    z[0] = 1.0
    return z


def lime_kernel(z: torch.Tensor, kernel_width: float) -> torch.Tensor:
    """(S, F) samples -> (S,) weights exp(-d^2 / (2 w^2)), d the cosine distance to the all-ones
    (unperturbed) sample: LIME's image kernel sqrt(exp(-d^2 / w^2)); an empty sample has d = 1."""
    kept = z.sum(1)
    d = 1.0 - torch.sqrt(kept / z.shape[1])
    return torch.exp(-(d**2) / (2 * kernel_width**2))


def weighted_ridge(z: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, alpha: float) -> torch.Tensor:
    """Weighted ridge with an unpenalised intercept for many targets at once (sklearn ``Ridge``).

    ``z`` (S, F) design shared by all images, ``y`` (S, N) one column of scores per image,
    ``weights`` (S,) -> (N, F) coefficients. Solves (X' W X + alpha D) b = X' W y with X = [1, z] and
    D = diag(0, 1, ..., 1), in float64, one solve for the whole batch (the system matrix depends on
    ``z`` and ``weights`` only).
    """
    xd = torch.cat([torch.ones_like(z[:, :1]), z], 1).double()
    wd = weights.double()[:, None]
    penalty = torch.eye(xd.shape[1], dtype=torch.float64, device=z.device) * alpha
    penalty[0, 0] = 0.0
    beta = torch.linalg.solve(xd.T @ (wd * xd) + penalty, xd.T @ (wd * y.double()))
    return beta[1:].T.float()


@register_method(
    "lime",
    MethodInfo(
        kind="perturbation",
        needs_target_layer=False,
        cost="1 + n_samples forwards per image (257 by default) + one batched (F+1)-dim ridge solve",
        forwards=257.0,
        paper="Ribeiro et al. 2016, 'Why Should I Trust You?' (LIME)",
        reference="Captum Lime (same samples, kernel and SkLearnRidge); sklearn Ridge for the surrogate",
        nonneg="relu",
    ),
)
class Lime(ExplainMethod):
    """LIME with superpixels: a weighted ridge surrogate of the target score on which superpixels are
    kept (removed ones filled with ``baseline``); a pixel's value is its superpixel's coefficient,
    ReLU'd (positive evidence for the class).

    Options: ``segments`` ("grid" default: an 8 x 8 grid, cheap and the same for every image;
    "slic": intensity-aware superpixels, :func:`slic_segments`); ``n_segments`` (64); ``n_samples``
    (256, the first the original image); ``kernel_width`` (0.25, LIME's image default); ``alpha`` (1.0,
    LIME's ridge); ``baseline`` (0.0); ``seed`` (0); ``batch`` (128) perturbed images per forward.
    """

    def __init__(
        self,
        segments: str = "grid",
        n_segments: int = 64,
        n_samples: int = 256,
        kernel_width: float = 0.25,
        alpha: float = 1.0,
        baseline: float = 0.0,
        seed: int = 0,
        batch: int = 128,
    ) -> None:
        if segments not in ("grid", "slic"):
            raise ValueError(f"segments must be 'grid' or 'slic', got {segments!r}")
        for name, value in (("n_segments", n_segments), ("n_samples", n_samples), ("batch", batch)):
            check_positive_int(name, value)
        if not (kernel_width > 0 and alpha >= 0):
            raise ValueError(f"kernel_width must be > 0 and alpha >= 0, got {kernel_width!r}, {alpha!r}")
        self.segments, self.n_segments, self.n_samples = segments, n_segments, n_samples
        self.kernel_width, self.alpha, self.baseline = kernel_width, alpha, float(baseline)
        self.seed, self.batch = seed, batch

    def superpixels(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, H, W) int64 labels in [0, F)."""
        n, _c, h, w = x.shape
        if self.segments == "slic":
            return slic_segments(x, self.n_segments)
        return grid_segments(n, h, w, self.n_segments, x.device)

    def attribute(self, q: Query) -> Attribution:
        logits, targets = plain_logits(q)
        n = q.x.shape[0]
        labels = self.superpixels(q.x).flatten(1)  # (N, H*W)
        g = max(1, round(math.sqrt(self.n_segments)))
        z = lime_samples(g * g, self.n_samples, self.seed).to(q.x.device)  # (S, F)

        def perturbed(rows: torch.Tensor) -> torch.Tensor:
            keep = z[rows // n].gather(1, labels[rows % n]).view(-1, 1, *q.x.shape[-2:]).to(q.x.dtype)
            return q.x[rows % n] * keep + self.baseline * (1 - keep)

        rows = self.n_samples * n
        scores = chunked_scores(q.model, rows, perturbed, targets.repeat(self.n_samples), q.score_fn, self.batch)
        coefs = weighted_ridge(z, scores.view(self.n_samples, n), lime_kernel(z, self.kernel_width), self.alpha)
        maps = coefs.gather(1, labels).view(n, *q.x.shape[-2:])
        return Attribution(logits, targets, maps)


__all__ = [
    "Lime",
    "Occlusion",
    "grid_segments",
    "lime_kernel",
    "lime_samples",
    "occlusion_masks",
    "slic_segments",
    "weighted_ridge",
    "window_starts",
]
