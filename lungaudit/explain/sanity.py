"""Sanity checks for explanation methods (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

* **Model-parameter randomisation (cascading):** re-initialise the model's layers one at a time from
  the head down and compare each method's maps on the randomised model with the trained model's. A
  method that explains the *model* must change as its weights are destroyed; one whose maps still
  correlate with the trained ones once every layer is random (mean Spearman rank correlation above
  ``threshold``, 0.5 by default) mostly shows the input (edges, intensity) and is marked as failing.
* **Data randomisation:** the same comparison between the trained model and a model of the same
  architecture trained on permuted labels (phase 2 trains it; :func:`data_randomization_test` takes
  both models).

Similarities are computed per image, batched on the maps' device: Spearman's rank correlation (ties
get average ranks, so the zero plateaus of ReLU'd maps are handled) and SSIM of min-max normalised
maps. Maps come from the one registry, so every method is checked the same way.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lungaudit.explain.base import ExplainMethod, frozen_eval, normalize_per_image
from lungaudit.explain.cam import CAM_METHODS

MethodSpec = str | ExplainMethod


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """(N, P) -> (N, P) float64 ranks 1..P within each row, ties sharing their average rank."""
    n, p = x.shape
    values, order = x.sort(dim=1)
    new_group = torch.ones_like(values, dtype=torch.bool)
    new_group[:, 1:] = values[:, 1:] != values[:, :-1]
    group = new_group.long().cumsum(1) - 1 + torch.arange(n, device=x.device)[:, None] * p  # unique per row
    pos = torch.arange(1, p + 1, device=x.device, dtype=torch.float64).expand(n, p).reshape(-1)
    first = torch.full((n * p,), float(p + 1), dtype=torch.float64, device=x.device)
    first = first.scatter_reduce(0, group.reshape(-1), pos, reduce="amin")
    last = torch.zeros(n * p, dtype=torch.float64, device=x.device)
    last = last.scatter_reduce(0, group.reshape(-1), pos, reduce="amax")
    sorted_ranks = ((first + last) / 2)[group.reshape(-1)].view(n, p)
    return torch.empty_like(sorted_ranks).scatter_(1, order, sorted_ranks)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image Spearman rank correlation of (N, ...) maps -> (N,) float64.

    A constant map has no ranking: its correlation with a varying map is 0 (it keeps none of that
    map's structure), and two constant maps give NaN (nothing to compare).
    """
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"maps must share an (N, ...) shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    ra, rb = average_ranks(a.flatten(1).double()), average_ranks(b.flatten(1).double())
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    na, nb = ra.norm(dim=1), rb.norm(dim=1)
    rho = (ra * rb).sum(1) / (na * nb).clamp_min(1e-300)
    one_flat = (na == 0) ^ (nb == 0)
    return torch.where((na == 0) & (nb == 0), torch.full_like(rho, math.nan), torch.where(one_flat, 0.0, rho))


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004) of (N, H, W) maps after min-max scaling each to [0, 1] -> (N,).

    Gaussian window (``window`` px, ``sigma``), constants K1 = 0.01, K2 = 0.03 for a data range of 1,
    averaged over the valid positions (no padding); maps smaller than the window use their side.
    """
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"maps must both be (N, H, W), got {tuple(a.shape)} and {tuple(b.shape)}")
    x, y = normalize_per_image(a.float())[:, None], normalize_per_image(b.float())[:, None]
    k = min(window, a.shape[-2], a.shape[-1])
    g = torch.exp(-((torch.arange(k, device=a.device, dtype=torch.float32) - (k - 1) / 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :])[None, None]

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).double()


def randomization_layers(model: nn.Module) -> list[str]:
    """The model's top-level children that hold parameters, head first (ResNet: fc, layer4, ..., conv1)."""
    names = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
    if not names:
        raise ValueError(f"{type(model).__name__} has no child module with parameters to randomise")
    return names[::-1]


def reinitialize(module: nn.Module, seed: int) -> None:
    """Re-initialise every submodule with ``reset_parameters`` (their own default init), in place.

    Drawn on a CPU copy from a forked, seeded RNG and copied back: the result depends on ``seed`` only,
    not on the device or the global RNG state, which is left untouched. BatchNorm also resets its
    running statistics (the randomised model is a freshly built one, layer by layer).
    """
    clone = copy.deepcopy(module).cpu()
    resettable = [m for m in clone.modules() if callable(getattr(m, "reset_parameters", None))]
    owned = {id(p) for m in resettable for p in m.parameters(recurse=False)}
    orphans = [n for n, p in clone.named_parameters() if id(p) not in owned]
    if orphans:
        raise ValueError(f"cannot re-initialise parameters without a reset_parameters() module: {orphans[:5]}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in resettable:
            m.reset_parameters()
    module.load_state_dict(clone.state_dict())


def cascading_randomization(
    model: nn.Module, layers: Sequence[str] | None = None, seed: int = 0
) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(layer, randomised)`` after re-initialising each layer in turn, cumulatively, head first.

    ``layers`` are dotted submodule names in the order to randomise (default
    :func:`randomization_layers`). One deep copy is made and mutated between yields (stage ``s`` has
    ``layers[:s + 1]`` random); the caller's model is never touched. Stage ``s`` draws with seed
    ``seed * 1000 + s``, so a run is reproducible.
    """
    names = list(layers) if layers is not None else randomization_layers(model)
    randomised = copy.deepcopy(model)
    for name in names:
        randomised.get_submodule(name)  # an unknown name fails before any work
    for s, name in enumerate(names):
        reinitialize(randomised.get_submodule(name), seed * 1000 + s)
        yield name, randomised


def _resolve(
    methods: Sequence[MethodSpec] | None, options: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, ExplainMethod]:
    """Method names (with their options) or instances -> {label: callable method}."""
    specs = list(CAM_METHODS.names()) if methods is None else list(methods)
    out: dict[str, ExplainMethod] = {}
    for spec in specs:
        if isinstance(spec, str):
            out[spec] = CAM_METHODS.get(spec)(**dict((options or {}).get(spec, {})))
        elif isinstance(spec, ExplainMethod):
            out[spec.name or type(spec).__name__] = spec
        else:
            raise ValueError(f"methods must be registry names or ExplainMethod instances, got {spec!r}")
    return out


def explain_all(
    model: nn.Module,
    x: torch.Tensor,
    methods: Mapping[str, ExplainMethod],
    target_layer: str,
    targets: torch.Tensor,
    score: str,
    out_size: tuple[int, int] | None,
) -> dict[str, torch.Tensor]:
    """{label: (N, H, W) maps} of ``x`` for each method, all explaining the same (N,) ``targets``."""
    return {
        k: m(model, x, target_layer, targets=targets, out_size=out_size, score=score).cams for k, m in methods.items()
    }


@dataclass(frozen=True)
class MapSimilarity:
    """Per-image similarity of two models' maps: ``spearman`` (N,) and ``ssim`` (N,) or ``None``."""

    spearman: torch.Tensor
    ssim: torch.Tensor | None
    threshold: float = 0.5

    @property
    def mean_spearman(self) -> float:
        """Mean over images, ignoring NaN (both maps constant); NaN when all are."""
        v = self.spearman[~self.spearman.isnan()]
        return float(v.mean()) if len(v) else math.nan

    @property
    def verdict(self) -> str:
        """'fail' when the maps still correlate above ``threshold``, 'pass' below, 'undefined' if NaN."""
        r = self.mean_spearman
        return "undefined" if math.isnan(r) else ("fail" if r > self.threshold else "pass")


def compare_maps(a: torch.Tensor, b: torch.Tensor, with_ssim: bool = True, threshold: float = 0.5) -> MapSimilarity:
    """:class:`MapSimilarity` of two (N, H, W) map batches, on CPU."""
    return MapSimilarity(spearman(a, b).cpu(), ssim(a, b).cpu() if with_ssim else None, threshold)


@dataclass(frozen=True)
class RandomizationCurve:
    """One method's cascade: ``layers`` randomised cumulatively (head first) and, per stage, the
    similarity to the trained model's maps: ``spearman`` and ``ssim`` (S, N) (``ssim`` may be None).
    ``final`` is the fully randomised stage, whose verdict is the method's."""

    method: str
    layers: tuple[str, ...]
    spearman: torch.Tensor
    ssim: torch.Tensor | None
    threshold: float

    @property
    def final(self) -> MapSimilarity:
        return MapSimilarity(self.spearman[-1], None if self.ssim is None else self.ssim[-1], self.threshold)

    @property
    def verdict(self) -> str:
        return self.final.verdict


def _prepare(model: nn.Module, x: torch.Tensor, targets: torch.Tensor | Sequence[int] | None) -> torch.Tensor:
    """(N,) targets on x's device: the given ones, or the trained model's predictions."""
    if x.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
    if targets is not None:
        return torch.as_tensor(targets, dtype=torch.long, device=x.device)
    with frozen_eval(model), torch.no_grad():
        return model(x).argmax(1)


def model_randomization_test(
    model: nn.Module,
    x: torch.Tensor,
    methods: Sequence[MethodSpec] | None = None,
    target_layer: str = "layer4",
    targets: torch.Tensor | Sequence[int] | None = None,
    score: str = "logit",
    layers: Sequence[str] | None = None,
    seed: int = 0,
    threshold: float = 0.5,
    out_size: tuple[int, int] | None = None,
    with_ssim: bool = True,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, RandomizationCurve]:
    """Cascading model-parameter randomisation for each method on one (N, C, H, W) batch.

    Every stage explains the same ``targets`` (default: the trained model's predictions) with
    ``methods`` (registry names, with ``options[name]`` as constructor options, or instances; default
    all registered). Cost: (1 + number of layers) x each method's cost on the batch.
    Returns {method: :class:`RandomizationCurve`}; ``curve.verdict`` is 'fail' when the fully
    randomised model's maps still correlate above ``threshold`` with the trained ones.
    """
    t = _prepare(model, x, targets)
    resolved = _resolve(methods, options)
    trained = explain_all(model, x, resolved, target_layer, t, score, out_size)
    rho: dict[str, list[torch.Tensor]] = {k: [] for k in resolved}
    sim: dict[str, list[torch.Tensor]] = {k: [] for k in resolved}
    names: list[str] = []
    for name, randomised in cascading_randomization(model, layers, seed):
        names.append(name)
        for k, maps in explain_all(randomised, x, resolved, target_layer, t, score, out_size).items():
            c = compare_maps(trained[k], maps, with_ssim, threshold)
            rho[k].append(c.spearman)
            if c.ssim is not None:
                sim[k].append(c.ssim)
    return {
        k: RandomizationCurve(
            k, tuple(names), torch.stack(rho[k]), torch.stack(sim[k]) if with_ssim else None, threshold
        )
        for k in resolved
    }


def data_randomization_test(
    model: nn.Module,
    random_label_model: nn.Module,
    x: torch.Tensor,
    methods: Sequence[MethodSpec] | None = None,
    target_layer: str = "layer4",
    targets: torch.Tensor | Sequence[int] | None = None,
    score: str = "logit",
    threshold: float = 0.5,
    out_size: tuple[int, int] | None = None,
    with_ssim: bool = True,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, MapSimilarity]:
    """Maps of the trained model vs a same-architecture model trained on permuted labels.

    Both explain the same ``targets`` (default: the trained model's predictions). Returns
    {method: :class:`MapSimilarity`}; 'fail' when the maps correlate above ``threshold`` -- the
    method shows the same thing whether or not the labels carried any signal.
    """
    t = _prepare(model, x, targets)
    resolved = _resolve(methods, options)
    a = explain_all(model, x, resolved, target_layer, t, score, out_size)
    b = explain_all(random_label_model, x, resolved, target_layer, t, score, out_size)
    return {k: compare_maps(a[k], b[k], with_ssim, threshold) for k in resolved}


__all__ = [
    "MapSimilarity",
    "RandomizationCurve",
    "average_ranks",
    "cascading_randomization",
    "compare_maps",
    "data_randomization_test",
    "model_randomization_test",
    "randomization_layers",
    "reinitialize",
    "spearman",
    "ssim",
]
