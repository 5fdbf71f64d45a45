"""``lungaudit sanity``: Adebayo et al.'s two randomisation tests for each explanation method, on a run.

* **Model-parameter randomisation (cascading):** the run's classifier is re-initialised layer by layer
  from the head down; after each layer the method's maps are compared (Spearman rank correlation,
  SSIM) with those of the trained model. A method whose maps still correlate above ``threshold``
  once every layer is random fails: it shows the input, not the model.
* **Data randomisation:** the same comparison with a copy of the classifier trained on permuted
  labels (:func:`~lungaudit.training.random_labels.train_random_label_classifier`).

Both compare the maps each method produces (non-negative, before the audit's floor), for the same
images and the same explained classes (the trained model's predictions). Outputs in ``out_dir``:
``sanity.json`` (every correlation and verdict), ``sanity.png`` (the curves) and ``sanity_maps.png``
(one image's maps for the trained, fully randomised and random-label models).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from lungaudit.data.records import Problem, Sample
from lungaudit.explain.cam import compute_cam, method_info
from lungaudit.explain.sanity import cascading_randomization, data_randomization_test, model_randomization_test
from lungaudit.runs.checkpoint import load_checkpoint
from lungaudit.runs.data import run_dataset
from lungaudit.runs.restore import restore
from lungaudit.studies.common import (
    RunContext,
    StudyInputError,
    checked_options,
    decode_samples,
    finite,
    pick_images,
    resolve_methods,
)
from lungaudit.studies.figures import sanity_curves, sanity_maps
from lungaudit.training.callbacks import TrainCallback
from lungaudit.training.random_labels import train_random_label_classifier
from lungaudit.utils import atomic_write_json

SANITY_JSON = "sanity.json"


@dataclass
class SanityResult:
    """``methods``: per method the record written to ``sanity.json`` (``verdict`` pass/fail/undefined)."""

    out_dir: Path
    methods: dict[str, dict[str, Any]]
    n_images: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def json_path(self) -> Path:
        return self.out_dir / SANITY_JSON

    @property
    def failing(self) -> list[str]:
        return [m for m, r in self.methods.items() if r["verdict"] == "fail"]


def verdict_of(*verdicts: str) -> str:
    """A method fails if any test fails; passes only if every test passed."""
    if "fail" in verdicts:
        return "fail"
    return "pass" if all(v == "pass" for v in verdicts) else "undefined"


def random_label_checkpoint(path: Path) -> Path:
    """The random-label classifier's checkpoint named by ``path``: an earlier sanity folder, its
    ``random_labels`` folder, or the ``.pt`` file itself."""
    path = Path(path)
    if path.is_file():
        return path
    for candidate in (path / "random_labels" / "weights" / "cls_best.pt", path / "weights" / "cls_best.pt"):
        if candidate.is_file():
            return candidate
    raise ValueError(f"{path}: no random-label classifier (expected {path / 'random_labels' / 'weights' / 'cls_best.pt'})")


def load_random_label_model(path: Path, device: torch.device) -> nn.Module:
    """A random-label classifier from an earlier sanity run (see :func:`random_label_checkpoint`)."""
    return restore(load_checkpoint(random_label_checkpoint(path), kind="cls", map_location=device), device)


def run_sanity(
    ctx: RunContext,
    out_dir: Path,
    methods: str | Sequence[str] | None = None,
    n_images: int = 16,
    split: str = "test",
    options: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    threshold: float = 0.5,
    random_epochs: int = 3,
    random_model: Path | None = None,
    callback: TrainCallback | None = None,
    message: Callable[[str], None] | None = None,
) -> SanityResult:
    """Both randomisation tests for each method on ``n_images`` of the run's ``split``; see the module doc.

    ``random_model``: reuse the random-label classifier of an earlier sanity run (its folder) instead
    of training one for ``random_epochs`` epochs. Raises ``ValueError`` for an unknown method or
    option, or when no image of the split can be read.
    """
    say = message or (lambda _m: None)
    names = resolve_methods(methods)
    opts = checked_options(names, options)
    if n_images < 1 or not 0 < threshold < 1:
        raise ValueError(f"n_images must be >= 1 and threshold in (0, 1), got {n_images} and {threshold}")
    x, samples, problems = _images(ctx, split, n_images, seed)
    model = ctx.models.classifier
    with torch.no_grad():
        targets = model(x).argmax(1)
    if random_model is not None:
        rl_model = load_random_label_model(random_model, ctx.device)
    else:
        say(f"training a copy of the classifier on permuted labels ({random_epochs} epoch(s)) -> {out_dir / 'random_labels'}")
        rl_model = train_random_label_classifier(ctx.run_dir, out_dir / "random_labels", epochs=random_epochs, seed=seed,
                                                 device=ctx.device, callback=callback)  # fmt: skip
    records = {}
    for m in names:
        say(f"{m}: {len(x)} image(s), cascade + random labels")
        records[m] = _test_method(ctx, model, rl_model, x, targets, m, opts[m], seed, threshold)
    doc = _document(ctx, records, samples, split, seed, threshold, out_dir, random_model)
    atomic_write_json(out_dir / SANITY_JSON, doc)
    sanity_curves({m: r["model_randomization"] for m, r in records.items()},
                  {m: r["data_randomization"]["spearman"] for m, r in records.items()}, threshold, out_dir / "sanity.png")  # fmt: skip
    _maps_figure(ctx, model, rl_model, x[:1], targets[:1], names, opts, seed, out_dir)
    return SanityResult(out_dir, records, len(x), problems)


def _images(ctx: RunContext, split: str, n: int, seed: int) -> tuple[torch.Tensor, list[Sample], list[Problem]]:
    dataset = run_dataset(ctx.run_dir, run_cfg=ctx.cfg, split=split, validate=False)
    chosen = pick_images([s for s in dataset.samples if s.label is None or s.label in ctx.models.class_names], n, seed)
    decoded = decode_samples(chosen, ctx.size, ctx.cfg.data.max_pixels)  # the tests compare maps; no lungs needed
    if not decoded.samples:
        raise StudyInputError(f"none of the {len(chosen)} chosen {split} image(s) of {ctx.run_dir} could be read", decoded.problems)
    x = torch.from_numpy(decoded.images[:, None]).to(ctx.device)
    return x, decoded.samples, decoded.problems


def _test_method(
    ctx: RunContext, model: nn.Module, rl_model: nn.Module, x: torch.Tensor, targets: torch.Tensor, method: str,
    options: dict[str, Any], seed: int, threshold: float,
) -> dict[str, Any]:  # fmt: skip
    a = ctx.cfg.audit
    common = dict(methods=[method], target_layer=a.target_layer, targets=targets, score=a.cam_score, threshold=threshold,
                  out_size=(ctx.size, ctx.size), options={method: options})  # fmt: skip
    t0 = time.perf_counter()
    curve = model_randomization_test(model, x, seed=seed, **common)[method]  # type: ignore[arg-type]
    data = data_randomization_test(model, rl_model, x, **common)[method]  # type: ignore[arg-type]
    return {
        "kind": method_info(method).kind,
        "options": options,
        "model_randomization": {
            "layers": list(curve.layers), "mean_spearman": _stage_means(curve.spearman),
            "mean_ssim": _stage_means(curve.ssim) if curve.ssim is not None else None,
            "spearman": finite(curve.final.mean_spearman), "verdict": curve.verdict,
        },
        "data_randomization": {
            "spearman": finite(data.mean_spearman),
            "ssim": finite(float(data.ssim.nanmean())) if data.ssim is not None else None, "verdict": data.verdict,
        },
        "verdict": verdict_of(curve.verdict, data.verdict),
        "seconds": round(time.perf_counter() - t0, 2),
    }  # fmt: skip


def _stage_means(per_stage: torch.Tensor) -> list[float | None]:
    """(S, N) per-image similarities -> per stage the mean over images (None where all are NaN)."""
    return [None if bool(r.isnan().all()) else finite(float(r[~r.isnan()].mean())) for r in per_stage]


def _document(
    ctx: RunContext, records: dict[str, Any], samples: list[Sample], split: str, seed: int, threshold: float, out_dir: Path,
    random_model: Path | None,
) -> dict[str, Any]:  # fmt: skip
    import json

    rl_dir = random_label_checkpoint(random_model).parent.parent if random_model is not None else out_dir / "random_labels"
    rl_json = rl_dir / "random_labels.json"
    c = ctx.models.cls_cfg
    return {
        "source": {
            "run": str(ctx.run_dir),
            "model": f"{c.arch} at {c.image_size} px from {ctx.run_dir.name}",
            "images": f"{len(samples)} {split} image(s)",
            "date": dt.date.today().isoformat(),
        },
        "settings": {"threshold": threshold, "seed": seed, "score": ctx.cfg.audit.cam_score, "target_layer": ctx.cfg.audit.target_layer,
                     "similarity": "per-image Spearman rank correlation (ties averaged) and SSIM of the maps; means over images"},
        "random_labels": json.loads(rl_json.read_text()) if rl_json.is_file() else None,
        "images": [str(s.path) for s in samples],
        "methods": records,
    }  # fmt: skip


def _maps_figure(
    ctx: RunContext, model: nn.Module, rl_model: nn.Module, x: torch.Tensor, targets: torch.Tensor, names: list[str],
    opts: dict[str, dict[str, Any]], seed: int, out_dir: Path,
) -> None:  # fmt: skip
    """One image's maps: trained model, fully randomised model, random-label model."""
    *_, (_, randomised) = cascading_randomization(model, seed=seed)
    a = ctx.cfg.audit
    rows = {}
    for m in names:
        rows[m] = [
            compute_cam(net, x, a.target_layer, targets=targets, method=m, score=a.cam_score, options=opts[m]).cams[0].cpu().numpy()
            for net in (model, randomised, rl_model)
        ]
    sanity_maps(x[0, 0].cpu().numpy(), rows, ["trained", "all layers random", "random labels"], out_dir / "sanity_maps.png")


__all__ = ["SANITY_JSON", "SanityResult", "load_random_label_model", "random_label_checkpoint", "run_sanity", "verdict_of"]
