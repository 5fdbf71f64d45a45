"""``lungaudit explain``: several explanation methods side by side for chosen images, with their lung energy.

Per image one panel PNG (the image, its lung outline, one map per method with E_in in its title) and,
for all images, ``explain.json`` with the numbers. Each map is the one the audit would measure with
that method (``audit.cam: <method>`` under the run's config: same score, same floor, same tolerant
band), so E_in here is what an audit with that method would report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from lungaudit.audit.metrics import lung_energy
from lungaudit.audit.step import apply_floor
from lungaudit.data.records import Problem, Sample
from lungaudit.explain.cam import compute_cam, method_info
from lungaudit.studies.common import (
    Decoded,
    RunContext,
    StudyInputError,
    checked_options,
    decode_samples,
    device_batch,
    finite,
    method_floor,
    resolve_methods,
)
from lungaudit.studies.figures import explain_panel
from lungaudit.studies.inputs import collect_inputs
from lungaudit.utils import atomic_write_json, safe_filename

DEFAULT_METHODS: tuple[str, ...] = ("gradcam", "guided_gradcam", "integrated_gradients", "occlusion")
EXPLAIN_JSON = "explain.json"
ENERGY_KEYS = ("e_in", "e_out", "e_in_tol", "e_out_tol", "e_in_ratio")


@dataclass
class ExplainResult:
    """``out_dir`` holds ``explain.json`` and one panel per entry of ``images`` (dicts as in the JSON)."""

    out_dir: Path
    images: list[dict[str, Any]]
    problems: list[Problem] = field(default_factory=list)

    @property
    def json_path(self) -> Path:
        return self.out_dir / EXPLAIN_JSON


@dataclass(frozen=True)
class _Plan:
    methods: list[str]
    options: dict[str, dict[str, Any]]
    floors: dict[str, str]
    target: int | None


def panel_name(index: int, path: Path) -> str:
    """``panels/0007_<safe stem>.png``: unique by the running index; the stem only makes it readable."""
    return f"panels/{index:04d}_{safe_filename(PurePath(path).stem, 60)}.png"


def explain_images(
    ctx: RunContext,
    inputs: Sequence[str | Path],
    out_dir: Path,
    methods: str | Sequence[str] | None = DEFAULT_METHODS,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    target: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ExplainResult:
    """Explain every image named by ``inputs`` (files, folders, data sets) with ``methods``.

    ``target``: a class name to explain for every image (default: each image's predicted class).
    Raises :class:`StudyInputError` (every refused file listed) when no image can be explained, and
    ``ValueError`` for an unknown method, option or class, before any file is written.
    """
    names = resolve_methods(methods)
    plan = _Plan(names, checked_options(names, options), {m: method_floor(ctx, m) for m in names}, _target_index(ctx, target))
    samples, problems = collect_inputs(inputs, ctx.run_dir)
    decoded = decode_samples(samples, ctx.size, ctx.cfg.data.max_pixels, ctx.can_segment)
    problems += decoded.problems
    if not decoded.samples:
        raise StudyInputError(f"none of the {len(inputs)} input(s) could be explained", problems)
    records: list[dict[str, Any]] = []
    bs = ctx.cfg.audit.batch_size
    for start in range(0, len(decoded.samples), bs):
        records += _explain_batch(ctx, decoded, slice(start, start + bs), plan, out_dir)
        if progress is not None:
            progress(min(start + bs, len(decoded.samples)), len(decoded.samples))
    atomic_write_json(out_dir / EXPLAIN_JSON, _document(ctx, plan, records, problems))
    return ExplainResult(out_dir, records, problems)


def _target_index(ctx: RunContext, target: str | None) -> int | None:
    if target is None:
        return None
    names = list(ctx.models.class_names)
    if target not in names:
        raise ValueError(f"target {target!r} is not a class of the run; valid: {', '.join(names)}")
    return names.index(target)


def _explain_batch(ctx: RunContext, d: Decoded, sl: slice, plan: _Plan, out_dir: Path) -> list[dict[str, Any]]:
    """Maps and energies of one batch on the device; one panel per image."""
    x, lungs, given = device_batch(ctx, d, sl)
    targets = None if plan.target is None else torch.full((len(x),), plan.target, dtype=torch.long, device=x.device)
    maps: dict[str, torch.Tensor] = {}
    energy: dict[str, dict[str, torch.Tensor]] = {}
    logits = None
    for m in plan.methods:
        res = compute_cam(ctx.models.classifier, x, ctx.cfg.audit.target_layer, targets=targets, method=m,
                          out_size=(ctx.size, ctx.size), score=ctx.cfg.audit.cam_score, options=plan.options[m])  # fmt: skip
        maps[m] = apply_floor(res.cams, plan.floors[m])
        energy[m] = lung_energy(maps[m], lungs, ctx.tolerance_px, fill=ctx.cfg.audit.fill_lungs)
        logits, targets = res.logits, res.targets  # every method explains the first one's targets
    assert logits is not None and targets is not None
    probs = torch.softmax(logits.float(), 1).cpu().numpy()
    cpu_maps = {m: v.cpu().numpy() for m, v in maps.items()}
    cpu_energy = {m: {k: v.cpu().numpy() for k, v in e.items()} for m, e in energy.items()}
    lungs_np, given_np, tgt = lungs.cpu().numpy(), given.cpu().numpy(), targets.cpu().numpy()
    out = []
    first = sl.start or 0
    for j, sample in enumerate(d.samples[sl]):
        mine = {m: {k: v[j] for k, v in e.items()} for m, e in cpu_energy.items()}
        rec = _record(ctx, first + j, sample, probs[j], int(tgt[j]), bool(given_np[j]), mine, plan)
        _draw(d.images[first + j], lungs_np[j], {m: v[j] for m, v in cpu_maps.items()}, rec, out_dir)
        out.append(rec)
    return out


def _record(
    ctx: RunContext, index: int, s: Sample, probs: np.ndarray, target: int, given: bool,
    energy: dict[str, dict[str, Any]], plan: _Plan,
) -> dict[str, Any]:  # fmt: skip
    names = list(ctx.models.class_names)
    pred = int(probs.argmax())
    return {
        "index": index,
        "path": str(s.path),
        "panel": panel_name(index, s.path),
        "label": s.label,
        "source": s.source,
        "mask": "given" if given else "predicted",
        "pred": names[pred],
        "prob_pred": float(probs[pred]),
        "probs": {c: float(p) for c, p in zip(names, probs)},
        "target": names[target],
        "methods": {
            m: {**{k: finite(e[k]) for k in ENERGY_KEYS}, "no_evidence": bool(e["no_evidence"]), "floor": plan.floors[m]}
            for m, e in energy.items()
        },
    }


def _draw(image: np.ndarray, lungs: np.ndarray, maps: dict[str, np.ndarray], rec: dict[str, Any], out_dir: Path) -> None:
    titles = {"__lungs__": f"lungs ({'given mask' if rec['mask'] == 'given' else 'U-Net'})"}
    for m, e in rec["methods"].items():
        sanity = " [fails sanity]" if method_info(m).sanity == "fail" else ""
        e_in = "no evidence" if e["no_evidence"] else f"E_in {e['e_in']:.2f} (tol {e['e_in_tol']:.2f})"
        titles[m] = f"{m}{sanity}\n{e_in}"
    truth = f", true {rec['label']}" if rec["label"] else ""
    explained = f"; explaining {rec['target']}" if rec["target"] != rec["pred"] else ""
    heading = f"{Path(rec['path']).name}: pred {rec['pred']} ({rec['prob_pred']:.2f}){truth}{explained}"
    explain_panel(image, lungs, maps, titles, heading, out_dir / rec["panel"])


def _document(ctx: RunContext, plan: _Plan, records: list[dict[str, Any]], problems: list[Problem]) -> dict[str, Any]:
    a = ctx.cfg.audit
    return {
        "run": str(ctx.run_dir),
        "class_names": list(ctx.models.class_names),
        "settings": {
            "target_layer": a.target_layer, "score": a.cam_score, "tolerance_px": ctx.tolerance_px, "size": ctx.size,
            "target": None if plan.target is None else ctx.models.class_names[plan.target],
        },
        "methods": {
            m: {"kind": method_info(m).kind, "cost": method_info(m).cost, "options": plan.options[m], "floor": plan.floors[m],
                "sanity": method_info(m).sanity, "sanity_note": method_info(m).sanity_note}
            for m in plan.methods
        },
        "images": records,
        "problems": [{"path": str(p.path), "kind": p.kind, "reason": p.reason} for p in problems],
    }  # fmt: skip


__all__ = ["DEFAULT_METHODS", "EXPLAIN_JSON", "ExplainResult", "explain_images", "panel_name"]
