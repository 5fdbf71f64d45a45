"""Which explanation method best finds the predictions that rest on a shortcut? (issue 13's leaderboard)

Used by ``bench_audit_validity.py --methods ...`` (and the real-anatomy benchmark when it wants one):
the same trained runs, the same test images and the same clean-twin ground truth for every method.

Per trained run:

1. The test and validation images are decoded once, exactly as the audit decodes them
   (:class:`~lungaudit.audit.loader.AuditImages`: image, given mask, marker boxes).
2. One audit step per batch with the default configuration gives what does not depend on the method:
   predictions, the masking flip and the marker-removal flip.
3. Each method computes its maps on the same batches (``compute_cam`` with the audit's score and
   target layer, the method's options); the tolerant and strict E_out are measured with each floor
   (``mean`` and ``none``), so the floor a kind gets under ``audit.cam_floor: auto`` can be chosen on
   figures rather than taste. The timing of every call is interleaved with a plain no-grad forward of
   the same batch (the ratio cancels load drift on a shared machine) and the peak extra memory is
   measured with ``bench_explain.PeakMemory``.
4. Scores on the test split: AUROC of E_out for twin-flip reliance, and the precision/recall of the
   method's E_out flag at its **own calibrated threshold**: the threshold at which the method flags
   the same share of *validation* images as the default audit (Grad-CAM, its floor, ``out_threshold``)
   does. It is read from the validation split's E_out distribution only -- never from the test twins
   -- and gives every method the same flag budget. "Audit flag" adds the method-independent flips,
   as the audit's flag does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from bench_explain import PeakMemory  # noqa: E402  (scripts/ is on the path)
from lungaudit.audit.loader import DecodeSpec, audit_loader, valid_boxes
from lungaudit.audit.metrics import lung_energy
from lungaudit.audit.step import CAM_FLOORS, StepSettings, apply_floor, audit_step, lung_masks, resolve_floor
from lungaudit.config import AuditConfig
from lungaudit.data.records import Sample
from lungaudit.explain.cam import compute_cam, method_info
from lungaudit.runs.restore import TrainedModels

FLOORS = tuple(f for f in CAM_FLOORS if f != "auto")

# Options that keep the expensive methods affordable on a CPU; printed with the table.
AFFORDABLE: dict[str, dict[str, Any]] = {
    "integrated_gradients": {"n_steps": 16},
    "smoothgrad": {"n_samples": 8},
    "scorecam": {"top_k": 16},
    "lime": {"n_samples": 64},
}


@dataclass
class Batch:
    x: torch.Tensor
    masks: torch.Tensor
    has_mask: torch.Tensor
    boxes: list
    lungs: torch.Tensor | None = None


@dataclass
class SplitData:
    samples: list[Sample]
    batches: list[Batch]
    flip: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # masking flip (audit step)
    marker_flip: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    pred: np.ndarray = field(default_factory=lambda: np.zeros(0, int))


def decode(samples: Sequence[Sample], models: TrainedModels, cfg: AuditConfig, device: torch.device) -> SplitData:
    """The split decoded once (as the audit decodes it), batches kept on the device with their lungs."""
    s = StepSettings.resolve(cfg, models)
    spec = DecodeSpec(s.size, not cfg.predict_masks, cfg.marker_side, None)
    batches = []
    for b in audit_loader(list(samples), spec, cfg.batch_size, 0, pin=False):
        bad = [e for e in b["error"] if e]
        if bad:
            raise ValueError(f"benchmark images must decode; got {bad[:3]}")
        x = b["image"].to(device)
        masks, has = b["mask"].to(device), b["has_mask"].to(device)
        batches.append(Batch(x, masks, has, valid_boxes(b["boxes"]), lung_masks(models, x, masks, has, s.seg_size)))
    return SplitData(list(samples), batches)


def method_independent(d: SplitData, models: TrainedModels, cfg: AuditConfig) -> None:
    """Predictions and both flips from the default audit step (the same for every method)."""
    s = StepSettings.resolve(cfg, models)
    flips, mflips, preds = [], [], []
    for b in d.batches:
        r = audit_step(models, b.x, b.masks, b.has_mask, b.boxes, s)
        flips.append(r.flip.cpu().numpy())
        mflips.append(r.marker_flip.cpu().numpy())
        preds.append(r.pred_full.cpu().numpy())
    d.flip, d.marker_flip, d.pred = np.concatenate(flips), np.concatenate(mflips), np.concatenate(preds)


def method_energies(
    d: SplitData, models: TrainedModels, cfg: AuditConfig, method: str, options: dict[str, Any], tol: int, mem: PeakMemory
) -> tuple[dict[str, dict[str, np.ndarray]], float, float, float]:
    """{floor: {"e_out_tol", "e_out", "no_evidence"}} for every image, seconds in the method, seconds in
    plain forwards of the same batches, and the peak extra MiB of one call."""
    out: dict[str, dict[str, list[np.ndarray]]] = {f: {"e_out_tol": [], "e_out": [], "no_evidence": []} for f in FLOORS}
    t_method = t_fwd = peak = 0.0
    model = models.classifier
    for b in d.batches:
        t0 = time.perf_counter()
        with torch.no_grad():
            model(b.x)
        t_fwd += time.perf_counter() - t0
        mem.start()
        t0 = time.perf_counter()
        res = compute_cam(model, b.x, cfg.target_layer, method=method, out_size=tuple(b.x.shape[-2:]), score=cfg.cam_score, options=options)
        _sync(b.x.device)
        t_method += time.perf_counter() - t0
        peak = max(peak, mem.stop())
        for f in FLOORS:
            e = lung_energy(apply_floor(res.cams, f), b.lungs, tol)
            for k in out[f]:
                out[f][k].append(e[k].cpu().numpy())
    return {f: {k: np.concatenate(v) for k, v in e.items()} for f, e in out.items()}, t_method, t_fwd, peak


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def calibrated_threshold(val_e_out: np.ndarray, flag_share: float) -> float:
    """The E_out above which ``flag_share`` of the validation images lie (no evidence counts as 1)."""
    v = np.nan_to_num(val_e_out, nan=1.0)
    return float(np.quantile(v, 1.0 - flag_share)) if flag_share > 0 else float(v.max())


def _pr(flag: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    tp = int((flag & truth).sum())
    return tp / max(int(flag.sum()), 1), tp / max(int(truth.sum()), 1)


def score_method(
    test: dict[str, np.ndarray], val: dict[str, np.ndarray], reliant: np.ndarray, flips: np.ndarray, share: float
) -> dict[str, Any]:
    """AUROC and calibrated-threshold precision/recall on the test split for one method and floor."""
    e_tol = np.nan_to_num(test["e_out_tol"], nan=1.0)
    e_strict = np.nan_to_num(test["e_out"], nan=1.0)
    both = 0 < reliant.sum() < len(reliant)
    thr = calibrated_threshold(val["e_out_tol"], share)
    flag = (e_tol > thr) | test["no_evidence"]
    p, r = _pr(flag, reliant)
    ap, ar = _pr(flag | flips, reliant)
    return {
        "auroc_e_out_tol": float(roc_auc_score(reliant, e_tol)) if both else None,
        "auroc_e_out": float(roc_auc_score(reliant, e_strict)) if both else None,
        "threshold": thr, "flag_rate": float(flag.mean()), "flag_precision": p, "flag_recall": r,
        "audit_flag_precision": ap, "audit_flag_recall": ar, "no_evidence": int(test["no_evidence"].sum()),
    }  # fmt: skip


def leaderboard(
    models: TrainedModels,
    cfg: AuditConfig,
    test_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    twin_pred: dict[str, str],
    methods: Sequence[str],
    options: dict[str, dict[str, Any]],
    device: torch.device,
    say: Any = print,
) -> dict[str, Any]:
    """Every method scored on one trained run; see the module doc. Returns a JSON-ready dict."""
    s = StepSettings.resolve(cfg, models)
    test, val = decode(test_samples, models, cfg, device), decode(val_samples, models, cfg, device)
    method_independent(test, models, cfg)
    flag_on_flip = s.flag_on_flip
    flips = test.marker_flip | (test.flip & flag_on_flip)
    reliant = np.array([twin_pred[smp.key] != models.class_names[p] for smp, p in zip(test.samples, test.pred)])
    mem = PeakMemory(device)
    raw: dict[str, Any] = {}
    for m in methods:
        t0 = time.perf_counter()
        e_test, t_m, t_f, peak = method_energies(test, models, cfg, m, options.get(m, {}), s.tolerance_px, mem)
        e_val, *_ = method_energies(val, models, cfg, m, options.get(m, {}), s.tolerance_px, mem)
        raw[m] = {"test": e_test, "val": e_val, "x_forward": t_m / t_f, "ms_per_image": 1000 * t_m / len(test.samples), "peak_mib": peak}
        say(f"  {m}: {time.perf_counter() - t0:.0f} s ({raw[m]['x_forward']:.1f}x forward)")
    ref_floor = resolve_floor(cfg.cam_floor, "gradcam")
    share = float(np.mean(np.nan_to_num(raw["gradcam"]["val"][ref_floor]["e_out_tol"], nan=1.0) > cfg.out_threshold))
    rows = {}
    for m, r in raw.items():
        per_floor = {f: score_method(r["test"][f], r["val"][f], reliant, flips, share) for f in FLOORS}
        rows[m] = {"kind": method_info(m).kind, "options": options.get(m, {}), "auto_floor": resolve_floor("auto", m),
                   "floors": per_floor, "x_forward": r["x_forward"], "x_gradcam": r["x_forward"] / raw["gradcam"]["x_forward"],
                   "ms_per_image": r["ms_per_image"], "peak_mib": r["peak_mib"]}  # fmt: skip
    return {"n_test": len(test.samples), "n_val": len(val.samples), "reliance_rate": float(reliant.mean()),
            "val_flag_share": share, "methods": rows}  # fmt: skip


def _f(v: Any, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _opts(o: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in o.items()) or "defaults"


def leaderboard_rows(res: dict[str, Any]) -> list[list[str]]:
    """One row per method at its ``auto`` floor, best tolerant AUROC first."""
    rows = []
    for m, r in res["methods"].items():
        sc = r["floors"][r["auto_floor"]]
        rows.append([m, r["kind"], r["auto_floor"], _f(sc["auroc_e_out_tol"]), _f(sc["auroc_e_out"]), _f(sc["threshold"]),
                     _f(sc["flag_precision"]), _f(sc["flag_recall"]), _f(sc["audit_flag_precision"]), _f(sc["audit_flag_recall"]),
                     _f(r["x_forward"], 1), _f(r["x_gradcam"], 1), _f(r["peak_mib"], 0), _opts(r["options"])])  # fmt: skip
    return sorted(rows, key=lambda row: -float(row[3]) if row[3] != "—" else 0.0)


HEADER = ["method", "kind", "floor", "AUROC E_out tol", "AUROC E_out", "threshold", "E_out flag P", "E_out flag R",
          "audit flag P", "audit flag R", "× forward", "× Grad-CAM", "peak MiB", "options"]  # fmt: skip


def floor_rows(res: dict[str, Any]) -> list[list[str]]:
    """Tolerant AUROC of every method under each floor (the evidence for ``KIND_FLOORS``)."""
    return [[m, r["kind"], *[_f(r["floors"][f]["auroc_e_out_tol"]) for f in FLOORS], r["auto_floor"]] for m, r in res["methods"].items()]


def leaderboard_tables(label: str, res: dict[str, Any]) -> list[Any]:
    from rich.table import Table

    t = Table(title=f"Leaderboard, {label}: {res['n_test']} test images (reliance {res['reliance_rate']:.3f}), "
                    f"thresholds flag {res['val_flag_share']:.3f} of {res['n_val']} validation images")  # fmt: skip
    for c in HEADER:
        t.add_column(c, justify="left" if c in ("method", "kind", "floor", "options") else "right")
    for row in leaderboard_rows(res):
        t.add_row(*row)
    f = Table(title=f"{label}: tolerant AUROC by floor")
    for c in ["method", "kind", *FLOORS, "auto"]:
        f.add_column(c)
    for row in floor_rows(res):
        f.add_row(*row)
    return [t, f]


def leaderboard_markdown(head: str, results: dict[str, Any]) -> str:
    lines = [head, ""]
    for label, res in results.items():
        lines += [
            f"**{label}**: {res['n_test']} test images, twin-flip reliance {res['reliance_rate']:.3f}. Each method's threshold "
            f"flags {res['val_flag_share']:.3f} of the {res['n_val']} validation images (the share the default audit flags there).",
            "",
            "| " + " | ".join(HEADER) + " |",
            "|---|---|---|" + "---:|" * (len(HEADER) - 4) + "---|",
            *["| " + " | ".join(row) + " |" for row in leaderboard_rows(res)],
            "",
            f"Tolerant AUROC under each floor ({label}):",
            "",
            "| method | kind | " + " | ".join(FLOORS) + " | auto |",
            "|---|---|" + "---:|" * len(FLOORS) + "---|",
            *["| " + " | ".join(row) + " |" for row in floor_rows(res)],
            "",
        ]
    return "\n".join(lines)


def with_defaults(cfg: AuditConfig) -> AuditConfig:
    """The audit config the leaderboard's reference step runs with: the default method, no overlays."""
    return replace(cfg, cam="gradcam", cam_options={}, overlays=False)


__all__ = ["AFFORDABLE", "FLOORS", "leaderboard", "leaderboard_markdown", "leaderboard_tables", "score_method", "with_defaults"]
