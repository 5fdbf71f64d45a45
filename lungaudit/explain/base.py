"""The template every explanation method follows, its registries and the shared post-processing.

A method is a class registered in ``CAM_METHODS`` with :func:`register_method`; it implements
:meth:`ExplainMethod.attribute` only. :meth:`ExplainMethod.__call__` does everything the audit relies
on for every method alike: input and target validation, eval mode with frozen parameters (restored
exactly, so no parameter ``.grad`` is ever written), the reduction of signed or per-channel
attributions to one non-negative (N, H, W) float32 map per image, and the resize to ``out_size``.

Each class carries a :class:`MethodInfo` (kind, whether it reads a target layer, its cost, paper,
reference implementation, how it is made non-negative), so the CLI and the report can list methods
from the registry alone.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lungaudit.registry import Registry

CAM_METHODS: Registry = Registry("CAM method")
CAM_SCORES: Registry = Registry("CAM target score")

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Kind = Literal["cam", "gradient", "perturbation"]
NonNeg = Literal["relu", "abs"]


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
class MethodInfo:
    """What the CLI and the report show about a method, read from the registry.

    ``forwards`` is the approximate cost at the default options, in no-grad forward passes per image
    (a backward through the network counts about 1.5); ``cost`` says the same in words. ``sanity`` is
    the Adebayo et al. verdict once one has been recorded (``"pass"``, ``"fail"``, ``"undefined"``;
    ``None``: not measured) and ``sanity_note`` what it rests on (the randomisation correlations, the
    model and images); both come from :mod:`.verdicts`, never from the class definition.
    """

    kind: Kind
    needs_target_layer: bool
    cost: str
    forwards: float
    paper: str
    reference: str
    nonneg: NonNeg
    sanity: str | None = None
    sanity_note: str | None = None
    yields: tuple[str, ...] = ()  # other methods whose maps this one's pass produces too (CamResult.also)


@dataclass(frozen=True)
class CamResult:
    """Output of every method.

    ``logits`` (N, C) as returned by the model on the unmodified input; ``cams`` (N, H, W) float32,
    non-negative, NOT normalised (see :func:`normalize_per_image`); ``targets`` (N,) int64, the
    explained class per sample. All on the input's device. ``also`` holds the maps of the methods in
    ``info.yields``, each exactly what ``compute_cam`` with that method (default options, same targets
    and score) returns: the serve path draws guided Grad-CAM and audits Grad-CAM from one pass.
    """

    logits: torch.Tensor
    cams: torch.Tensor
    targets: torch.Tensor
    also: Mapping[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Query:
    """One validated request, as a method's :meth:`ExplainMethod.attribute` receives it.

    ``x`` (N, C, H, W) detached; ``layer`` the resolved target layer (``None`` for methods that do not
    read one); ``targets`` (N,) int64 or ``None`` for the predicted class.
    """

    model: nn.Module
    x: torch.Tensor
    layer: nn.Module | None
    layer_name: str
    targets: torch.Tensor | None
    score_fn: ScoreFn

    def resolve_targets(self, logits: torch.Tensor) -> torch.Tensor:
        """Check (N, C) logits and return the (N,) classes to explain: the given ones or the argmax."""
        n = self.x.shape[0]
        if logits.ndim != 2 or logits.shape[0] != n:
            raise ValueError(f"model must return (N, C) logits, got shape {tuple(logits.shape)}")
        if self.targets is None:
            return logits.detach().argmax(1)
        if bool(((self.targets < 0) | (self.targets >= logits.shape[1])).any()):
            raise ValueError(f"targets must lie in [0, {logits.shape[1]}), got {self.targets.tolist()}")
        return self.targets


@dataclass(frozen=True)
class Attribution:
    """What a method returns: (N, C) ``logits`` of the plain input, (N,) ``targets`` and ``maps``.

    ``maps`` is either (N, h, w) at any resolution (layer maps) or (N, C_in, H, W) per input channel;
    both may be signed: :meth:`ExplainMethod.__call__` reduces them with the method's ``nonneg`` rule.
    """

    logits: torch.Tensor
    targets: torch.Tensor
    maps: torch.Tensor
    also: Mapping[str, torch.Tensor] = field(default_factory=dict)  # raw maps of the methods in info.yields


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and ``requires_grad=False`` on all parameters; both restored exactly, even on errors.

    Eval mode is required, not cosmetic: train-mode BatchNorm mixes batch statistics, which would
    make one sample's score depend on the others and the batched gradients wrong. Frozen parameters
    mean no weight gradient is ever computed (a backward only to what we ask for) and ``.grad`` stays
    as the caller left it.
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


def resolve_layer(model: nn.Module, target_layer: str) -> nn.Module:
    """``model.get_submodule(target_layer)`` with a ValueError naming valid layers."""
    try:
        return model.get_submodule(target_layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n][:12]
        raise ValueError(
            f"target_layer {target_layer!r} is not a submodule of {type(model).__name__}; e.g. {', '.join(names)}"
        ) from None


def reduce_to_map(maps: torch.Tensor, nonneg: NonNeg) -> torch.Tensor:
    """(N, h, w) or (N, C, H, W) signed attributions -> (N, h, w) float32 >= 0.

    ``relu`` keeps positive evidence for the target (summed over channels first); ``abs`` keeps the
    magnitude (|a| summed over channels), for methods whose sign is not "for/against" but direction
    of a gradient. For one-channel input both reductions commute with the channel sum.
    """
    maps = maps.float()
    if maps.ndim == 4:
        return maps.abs().sum(1) if nonneg == "abs" else F.relu(maps.sum(1))
    if maps.ndim == 3:
        return maps.abs() if nonneg == "abs" else F.relu(maps)
    raise ValueError(f"attribution maps must be (N, h, w) or (N, C, H, W), got {tuple(maps.shape)}")


def resize_maps(maps: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) >= 0 -> (N, *out_size) >= 0, bilinear (antialiased when shrinking, so a pixel-sharp
    gradient map keeps its energy distribution instead of being point-sampled)."""
    if tuple(maps.shape[-2:]) == tuple(out_size):
        return maps
    shrink = maps.shape[-2] > out_size[0] or maps.shape[-1] > out_size[1]
    out = F.interpolate(maps[:, None], size=out_size, mode="bilinear", align_corners=False, antialias=shrink)[:, 0]
    return out.clamp_min_(0.0)  # bilinear of non-negative values is non-negative; guard rounding


def chunked_scores(
    model: nn.Module,
    n_rows: int,
    make_inputs: Callable[[torch.Tensor], torch.Tensor],
    row_targets: torch.Tensor,
    score_fn: ScoreFn,
    batch: int,
) -> torch.Tensor:
    """Scores of ``n_rows`` perturbed inputs, ``batch`` rows per no-grad forward (the memory bound).

    ``make_inputs`` maps (B,) row indices (on the targets' device) to (B, C, H, W) inputs, so the
    perturbed copies exist one chunk at a time; ``row_targets`` (n_rows,) is the class per row.
    Returns (n_rows,) float32 scores.
    """
    device = row_targets.device
    out = []
    with torch.no_grad():
        for start in range(0, n_rows, batch):
            idx = torch.arange(start, min(start + batch, n_rows), device=device)
            logits = model(make_inputs(idx))
            out.append(score_fn(logits.float(), row_targets[idx]).float())
    return torch.cat(out) if out else torch.zeros(0, device=device)


def check_positive_int(name: str, value: int | None, allow_none: bool = False) -> None:
    """ValueError unless ``value`` is an int >= 1 (or None where allowed): options fail up front."""
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class ExplainMethod:
    """Template for every method: subclasses implement :meth:`attribute` and carry ``info``.

    Options (steps, windows, samples...) are keyword arguments of the subclass's constructor, validated
    there; ``CAM_METHODS.get(name)()`` gives the documented defaults.
    """

    name: ClassVar[str] = ""
    info: ClassVar[MethodInfo]

    def attribute(self, q: Query) -> Attribution:
        """Explain ``q.x`` under eval mode with frozen parameters (set up by ``__call__``)."""
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
        q = self._query(model, x, target_layer, targets, score)
        out_size = tuple(x.shape[-2:]) if out_size is None else tuple(out_size)  # type: ignore[assignment]
        if len(out_size) != 2 or min(out_size) < 1:
            raise ValueError(f"out_size must be (H, W) with positive sides, got {out_size}")
        with frozen_eval(model):
            att = self.attribute(q)
        # float32 whatever autocast produced, and with the caller's autocast off for the reduction.
        with torch.autocast(device_type=x.device.type, enabled=False):
            cams = resize_maps(reduce_to_map(att.maps.detach(), self.info.nonneg), out_size)  # type: ignore[arg-type]
            also = {name: resize_maps(reduce_to_map(m.detach(), CAM_METHODS.get(name).info.nonneg), out_size)  # type: ignore[arg-type]
                    for name, m in att.also.items()}  # fmt: skip
        return CamResult(logits=att.logits.detach(), cams=cams, targets=att.targets, also=also)

    def _query(
        self,
        model: nn.Module,
        x: torch.Tensor,
        target_layer: str,
        targets: torch.Tensor | Sequence[int] | None,
        score: str,
    ) -> Query:
        score_fn = CAM_SCORES.get(score)
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"x must be (N, C, H, W), got shape {tuple(getattr(x, 'shape', ()))}")
        if not x.is_floating_point() or x.shape[0] == 0:
            raise ValueError(f"x must be a non-empty floating-point batch, got {x.dtype} with {x.shape[0]} images")
        layer = resolve_layer(model, target_layer) if self.info.needs_target_layer else None
        t = None
        if targets is not None:
            t = torch.as_tensor(targets, dtype=torch.long, device=x.device)
            if t.shape != (x.shape[0],):
                raise ValueError(f"targets must have shape ({x.shape[0]},), got {tuple(t.shape)}")
        return Query(model=model, x=x.detach(), layer=layer, layer_name=target_layer, targets=t, score_fn=score_fn)


def register_method(name: str, info: MethodInfo) -> Callable[[type[ExplainMethod]], type[ExplainMethod]]:
    """Class decorator: set ``name`` and ``info`` and add the class to ``CAM_METHODS``."""

    def deco(cls: type[ExplainMethod]) -> type[ExplainMethod]:
        cls.name = name
        cls.info = info
        return CAM_METHODS.register(name)(cls)

    return deco


def method_info(name: str) -> MethodInfo:
    """The registry entry's metadata (KeyError listing valid names for an unknown one)."""
    return CAM_METHODS.get(name).info


def method_options(name: str) -> dict[str, Any]:
    """The options ``name`` takes, with their defaults: its constructor's keyword arguments."""
    params = inspect.signature(CAM_METHODS.get(name).__init__).parameters
    return {k: p.default for k, p in params.items() if k != "self" and p.kind is p.POSITIONAL_OR_KEYWORD}


def build_method(name: str, options: Mapping[str, Any] | None = None) -> ExplainMethod:
    """The method ``name`` with ``options``; a ValueError names an unknown method or option.

    Options are checked against the constructor (:func:`method_options`) and then by it (ranges),
    so a misspelt ``n_step`` fails up front instead of as a TypeError deep in a run.
    """
    if name not in CAM_METHODS:
        raise ValueError(f"unknown explanation method {name!r}; valid: {', '.join(CAM_METHODS.names())}")
    opts = dict(options or {})
    valid = method_options(name)
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise ValueError(f"{name} takes no option(s) {', '.join(unknown)}; valid: {', '.join(valid) or 'none'}")
    return CAM_METHODS.get(name)(**opts)


def normalize_per_image(cams: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Min-max scale each (H, W) map of (N, H, W) to [0, 1] (pytorch-grad-cam's convention); for display."""
    if cams.ndim != 3:
        raise ValueError(f"cams must be (N, H, W), got shape {tuple(cams.shape)}")
    flat = cams.flatten(1)
    lo = flat.min(1).values[:, None, None]
    hi = flat.max(1).values[:, None, None]
    return (cams - lo) / (hi - lo + eps)


__all__ = [
    "CAM_METHODS",
    "CAM_SCORES",
    "Attribution",
    "CamResult",
    "ExplainMethod",
    "MethodInfo",
    "Query",
    "build_method",
    "chunked_scores",
    "frozen_eval",
    "method_info",
    "method_options",
    "normalize_per_image",
    "reduce_to_map",
    "register_method",
    "resize_maps",
    "resolve_layer",
]
