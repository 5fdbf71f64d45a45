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
CHEAP_FORWARDS = 5.0  # bench_explain's line between methods timed by repetition and the heavy ones

# Options that keep the expensive methods affordable on a CPU; printed with the table.
AFFORDABLE: dict[str, dict[str, Any]] = {
    "integrated_gradients": {"n_steps": 16},
    "smoothgrad": {"n_samples": 8},
    "scorecam": {"top_k": 16},
    "lime": {"n_samples": 64},
}


@dataclass
class SplitData:
    """A split decoded once, held whole on the device: ``x``/``masks`` (N, 1, S, S), ``has_mask`` (N,),
    ``lungs`` (N, S, S), per-image marker ``boxes``; the method-independent audit results once run."""

    samples: list[Sample]
    x: torch.Tensor
    masks: torch.Tensor
    has_mask: torch.Tensor
    lungs: torch.Tensor
    boxes: list
    flip: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # masking flip (audit step)
    marker_flip: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    pred: np.ndarray = field(default_factory=lambda: np.zeros(0, int))

    def chunks(self, idx: np.ndarray, size: int) -> list[np.ndarray]:
        return [idx[i : i + size] for i in range(0, len(idx), size)]


def decode(samples: Sequence[Sample], models: TrainedModels, cfg: AuditConfig, device: torch.device) -> SplitData:
    """The split decoded as the audit decodes it (given masks, marker boxes), with its lungs."""
    s = StepSettings.resolve(cfg, models)
    spec = DecodeSpec(s.size, not cfg.predict_masks, cfg.marker_side, None)
    parts: dict[str, list] = {"x": [], "masks": [], "has": [], "lungs": [], "boxes": []}
    for b in audit_loader(list(samples), spec, cfg.batch_size, 0, pin=False):
        bad = [e for e in b["error"] if e]
        if bad:
            raise ValueError(f"benchmark images must decode; got {bad[:3]}")
        x, masks, has = b["image"].to(device), b["mask"].to(device), b["has_mask"].to(device)
        for k, v in (("x", x), ("masks", masks), ("has", has), ("lungs", lung_masks(models, x, masks, has, s.seg_size))):
            parts[k].append(v)
        parts["boxes"] += valid_boxes(b["boxes"])
    cat = {k: torch.cat(v) for k, v in parts.items() if k != "boxes"}
    return SplitData(list(samples), cat["x"], cat["masks"], cat["has"], cat["lungs"], parts["boxes"])


def method_independent(d: SplitData, models: TrainedModels, cfg: AuditConfig) -> None:
    """Predictions and both flips from the default audit step (the same for every method)."""
    s = StepSettings.resolve(cfg, models)
    flips, mflips, preds = [], [], []
    for c in d.chunks(np.arange(len(d.samples)), cfg.batch_size):
        r = audit_step(models, d.x[c], d.masks[c], d.has_mask[c], [d.boxes[i] for i in c], s)
        flips.append(r.flip.cpu().numpy())
        mflips.append(r.marker_flip.cpu().numpy())
        preds.append(r.pred_full.cpu().numpy())
    d.flip, d.marker_flip, d.pred = np.concatenate(flips), np.concatenate(mflips), np.concatenate(preds)


def method_energies(
    d: SplitData, idx: np.ndarray, models: TrainedModels, cfg: AuditConfig, method: str, options: dict[str, Any], tol: int,
    mem: PeakMemory,
) -> tuple[dict[str, dict[str, np.ndarray]], float, float, float]:  # fmt: skip
    """{floor: {"e_out_tol", "e_out", "no_evidence"}} for the images ``idx``, seconds in the method,
    seconds in plain forwards of the same batches, and the peak extra MiB of one call."""
    out: dict[str, dict[str, list[np.ndarray]]] = {f: {"e_out_tol": [], "e_out": [], "no_evidence": []} for f in FLOORS}
    t_method = t_fwd = peak = 0.0
    model = models.classifier
    for c in d.chunks(idx, cfg.batch_size):
        x = d.x[c]
        t0 = time.perf_counter()
        with torch.no_grad():
            model(x)
        t_fwd += time.perf_counter() - t0
        mem.start()
        t0 = time.perf_counter()
        res = compute_cam(model, x, cfg.target_layer, method=method, out_size=tuple(x.shape[-2:]), score=cfg.cam_score, options=options)
        _sync(x.device)
        t_method += time.perf_counter() - t0
        peak = max(peak, mem.stop())
        for f in FLOORS:
            e = lung_energy(apply_floor(res.cams, f), d.lungs[c], tol, fill=cfg.fill_lungs)
            for k in out[f]:
                out[f][k].append(e[k].cpu().numpy())
    return {f: {k: np.concatenate(v) for k, v in e.items()} for f, e in out.items()}, t_method, t_fwd, peak


def subset(n: int, limit: int | None, seed: int, strata: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices of at most ``limit`` of ``n`` images, seeded; with ``strata`` (N,) bool the share
    of True is kept (the test subset keeps the reliance rate, so precision keeps its meaning)."""
    if limit is None or limit >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if strata is None:
        return np.sort(rng.choice(n, limit, replace=False))
    pos, neg = np.flatnonzero(strata), np.flatnonzero(~strata)
    k = int(round(limit * len(pos) / n))
    return np.sort(np.concatenate([rng.choice(pos, k, replace=False), rng.choice(neg, limit - k, replace=False)]))


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
    limits: tuple[int | None, int | None] = (None, None),
    say: Any = print,
) -> dict[str, Any]:
    """Every method scored on one trained run; see the module doc. Returns a JSON-ready dict.

    ``limits`` = (test, validation) image budgets of the *expensive* methods (more than
    ``CHEAP_FORWARDS`` forwards per image at their options' defaults): they run on a seeded subset
    (the test one keeps the reliance rate) and Grad-CAM, which runs on every image, is scored on
    the same subset beside them.
    """
    s = StepSettings.resolve(cfg, models)
    test, val = decode(test_samples, models, cfg, device), decode(val_samples, models, cfg, device)
    method_independent(test, models, cfg)
    flips = test.marker_flip | (test.flip & s.flag_on_flip)
    reliant = np.array([twin_pred[smp.key] != models.class_names[p] for smp, p in zip(test.samples, test.pred)])
    small = (subset(len(test.samples), limits[0], 0, reliant), subset(len(val.samples), limits[1], 1))
    full = (np.arange(len(test.samples)), np.arange(len(val.samples)))
    mem = PeakMemory(device)
    raw: dict[str, Any] = {}
    for m in ["gradcam", *[m for m in methods if m != "gradcam"]]:
        t0 = time.perf_counter()
        ti, vi = small if method_info(m).forwards > CHEAP_FORWARDS else full
        e_test, t_m, t_f, peak = method_energies(test, ti, models, cfg, m, options.get(m, {}), s.tolerance_px, mem)
        e_val, *_ = method_energies(val, vi, models, cfg, m, options.get(m, {}), s.tolerance_px, mem)
        raw[m] = {"test": e_test, "val": e_val, "ti": ti, "vi": vi, "x_forward": t_m / t_f, "ms_per_image": 1000 * t_m / len(ti),
                  "peak_mib": peak}  # fmt: skip
        say(f"  {m}: {len(ti)} test + {len(vi)} val images, {time.perf_counter() - t0:.0f} s ({raw[m]['x_forward']:.1f}x forward)")
    ref = raw["gradcam"]
    ref_floor = resolve_floor(cfg.cam_floor, "gradcam")
    share = float(np.mean(np.nan_to_num(ref["val"][ref_floor]["e_out_tol"], nan=1.0) > cfg.out_threshold))
    rows = {m: _row(m, r, ref, reliant, flips, share, options) for m, r in raw.items()}
    return {"n_test": len(test.samples), "n_val": len(val.samples), "reliance_rate": float(reliant.mean()),
            "val_flag_share": share, "limits": list(limits), "methods": rows}  # fmt: skip


def _row(m: str, r: dict, ref: dict, reliant: np.ndarray, flips: np.ndarray, share: float, options: dict) -> dict[str, Any]:
    """One method's scores under each floor, with Grad-CAM's on the same test images beside them."""
    ti = r["ti"]
    pos = np.searchsorted(ref["ti"], ti)  # Grad-CAM ran on every test image: pick the same ones
    floors = {}
    for f in FLOORS:
        sc = score_method(r["test"][f], r["val"][f], reliant[ti], flips[ti], share)
        same = {k: v[pos] for k, v in ref["test"][f].items()}
        sc["gradcam_auroc_same_images"] = score_method(same, ref["val"][f], reliant[ti], flips[ti], share)["auroc_e_out_tol"]
        floors[f] = sc
    return {"kind": method_info(m).kind, "sanity": method_info(m).sanity, "options": options.get(m, {}), "auto_floor": resolve_floor("auto", m), "floors": floors,
            "n_test": len(ti), "n_val": len(r["vi"]), "x_forward": r["x_forward"], "x_gradcam": r["x_forward"] / ref["x_forward"],
            "ms_per_image": r["ms_per_image"], "peak_mib": r["peak_mib"]}  # fmt: skip


def _f(v: Any, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _opts(o: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in o.items()) or "defaults"


def leaderboard_rows(res: dict[str, Any]) -> list[list[str]]:
    """One row per method at its ``auto`` floor, best tolerant AUROC first."""
    rows = []
    for m, r in res["methods"].items():
        sc = r["floors"][r["auto_floor"]]
        rows.append([m, r["kind"], r["auto_floor"], str(r["n_test"]), _f(sc["auroc_e_out_tol"]), _f(sc["gradcam_auroc_same_images"]),
                     _f(sc["auroc_e_out"]), _f(sc["threshold"]),
                     _f(sc["flag_precision"]), _f(sc["flag_recall"]), _f(sc["audit_flag_precision"]), _f(sc["audit_flag_recall"]),
                     _f(r["x_forward"], 1), _f(r["x_gradcam"], 1), _f(r["peak_mib"], 0), r.get("sanity") or "not measured",
                     _opts(r["options"])])  # fmt: skip
    return sorted(rows, key=lambda row: -float(row[4]) if row[4] != "—" else 0.0)


HEADER = ["method", "kind", "floor", "test images", "AUROC E_out tol", "Grad-CAM, same images", "AUROC E_out", "threshold",
          "E_out flag P", "E_out flag R",
          "audit flag P", "audit flag R", "× forward", "× Grad-CAM", "peak MiB", "sanity", "options"]  # fmt: skip


def floor_rows(res: dict[str, Any]) -> list[list[str]]:
    """Tolerant AUROC of every method under each floor (the evidence for ``KIND_FLOORS``)."""
    return [[m, r["kind"], *[_f(r["floors"][f]["auroc_e_out_tol"]) for f in FLOORS], r["auto_floor"]] for m, r in res["methods"].items()]


def leaderboard_tables(label: str, res: dict[str, Any]) -> list[Any]:
    from rich.table import Table

    t = Table(title=f"Leaderboard, {label}: {res['n_test']} test images (reliance {res['reliance_rate']:.3f}), "
                    f"thresholds flag {res['val_flag_share']:.3f} of {res['n_val']} validation images")  # fmt: skip
    for c in HEADER:
        t.add_column(c, justify="left" if c in ("method", "kind", "floor", "sanity", "options") else "right")
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
        lim = res.get("limits") or [None, None]
        sub = (f" Methods costing more than {CHEAP_FORWARDS:g} forwards per image ran on a seeded subset of {lim[0]} test images "
               f"(reliance rate kept) and {lim[1]} validation images; \"Grad-CAM, same images\" is Grad-CAM's AUROC on that subset."
               if lim[0] or lim[1] else "")  # fmt: skip
        lines += [
            f"**{label}**: {res['n_test']} test images, twin-flip reliance {res['reliance_rate']:.3f}. Each method's threshold "
            f"flags {res['val_flag_share']:.3f} of the {res['n_val']} validation images (the share the default audit flags there).{sub}",
            "",
            "| " + " | ".join(HEADER) + " |",
            "|---|---|---|" + "---:|" * (len(HEADER) - 5) + "---|---|",
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


def add_leaderboard_args(ap: Any) -> None:
    """The ``--methods`` options both validity benchmarks take (phantom and real anatomy)."""
    ap.add_argument("--methods", default="", help="score these explanation methods (comma list or 'all') instead of the default audit")
    ap.add_argument("--models", default="mp0,default", help="with --methods: which trained runs to score (mp0, default)")
    ap.add_argument("--option", action="append", default=[], help="with --methods: method.key=value (replaces the affordable preset's entry)")
    ap.add_argument("--method-defaults", action="store_true", help="with --methods: every method at its defaults (no affordable preset)")
    ap.add_argument("--max-test", type=int, default=None, help="with --methods: test images for the expensive methods (seeded, reliance rate kept)")
    ap.add_argument("--max-val", type=int, default=None, help="with --methods: validation images calibrating the expensive methods")


def check_leaderboard_args(ap: Any, args: Any) -> None:
    """Refuse unknown methods and malformed options before anything is trained (argparse's exit 2)."""
    if not args.methods:
        return
    from lungaudit.studies.common import parse_option, resolve_methods

    try:
        resolve_methods(args.methods)
        parse_option(args.option)
    except ValueError as e:
        ap.error(str(e))


def run_leaderboard(
    args: Any, models: TrainedModels, cfg: AuditConfig, test: Sequence[Sample], val: Sequence[Sample], twin_pred: dict[str, str],
    say: Any = print,
) -> dict[str, Any]:  # fmt: skip
    """:func:`leaderboard` with the methods and options ``add_leaderboard_args`` parsed (Grad-CAM always in: it is
    the reference the thresholds are calibrated against)."""
    from lungaudit.studies.common import parse_option, resolve_methods

    methods = resolve_methods(args.methods)
    methods = methods if "gradcam" in methods else ["gradcam", *methods]
    options = {} if args.method_defaults else {m: dict(o) for m, o in AFFORDABLE.items() if m in methods}
    for m, o in parse_option(args.option).items():
        options.setdefault(m, {}).update(o)
    device = torch.device(args.device)
    return leaderboard(models, with_defaults(cfg), test, val, twin_pred, methods, options, device, (args.max_test, args.max_val), say=say)


def record_leaderboard(results: dict[str, Any], out_json: Any, bench_md: Any, section: str | None, head: str, say: Any = print) -> None:
    """Print the leaderboard, write it as JSON and, when ``section`` is given, as that BENCHMARKS.md section."""
    import json

    from _bench_common import write_benchmark_section

    for label, res in results.items():
        for t in leaderboard_tables(label, res):
            say(t)
    out_json.write_text(json.dumps(results, indent=2))
    if section:
        write_benchmark_section(bench_md, section, leaderboard_markdown(head, results))


def with_defaults(cfg: AuditConfig) -> AuditConfig:
    """The audit config the leaderboard's reference step runs with: the default method, no overlays."""
    return replace(cfg, cam="gradcam", cam_options={}, overlays=False)


__all__ = ["AFFORDABLE", "FLOORS", "add_leaderboard_args", "check_leaderboard_args", "leaderboard", "leaderboard_markdown", "leaderboard_tables", "record_leaderboard",
           "run_leaderboard", "score_method", "with_defaults"]
