#!/usr/bin/env python
"""Would another flag rule fix the false alarms? What-if scores on the validity benchmarks' own audits.

Reads what ``bench_audit_validity.py --recipe default`` (phantoms) and ``bench_audit_validity_real.py``
(planted real films) left in their output folders -- the audit rows of both trained models and their
test twins -- and re-scores the flag under alternative rules, without retraining or re-auditing:

* ``current``: the audit's flag (tolerant E_out above ``out_threshold``, or a masking flip for a
  model trained on masked inputs, or a flip when the marker boxes are painted over);
* ``E_out needs a drop``: heat outside the lungs counts only when masking the outside also lowers the
  predicted class's probability by at least ``--drop`` (corroboration by the counterfactual);
* ``+ flip needs a drop``: a masking flip counts only with a probability drop of ``2 x --drop``;
* ``E_out only`` and ``marker flip only``: each signal alone.

and prints each model's flags one per line (true/false positive, missed), the rule table and the
AUROC of several scores. It also measures the **spill**: the tolerant E_out of the same model's
Grad-CAM on the *lung-only* input (everything outside the dilated lungs filled, as the masking
counterfactual does). Nothing outside the lungs is left to look at, so that energy is what the CAM's
resolution and the mask's outline put there by themselves -- the floor under which E_out says
nothing -- and ``E_out - spill`` is tried as a per-image, self-calibrated score.
``--record`` writes the BENCHMARKS.md section.

    python scripts/analyse_flag_rules.py --phantom runs/bench/validity_v2 --real runs/bench/validity_real
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
import bench_audit_validity as phantom_bench  # noqa: E402
import bench_audit_validity_real as real_bench  # noqa: E402
from _bench_common import write_benchmark_section  # noqa: E402

from _explain_leaderboard import decode  # noqa: E402
from lungaudit.audit.metrics import lung_energy, lung_only  # noqa: E402
from lungaudit.audit.step import StepSettings, apply_floor  # noqa: E402
from lungaudit.data.layouts import load_dataset  # noqa: E402
from lungaudit.explain.cam import compute_cam  # noqa: E402
from lungaudit.runs.data import run_config  # noqa: E402
from lungaudit.config import AuditConfig  # noqa: E402
from lungaudit.runs.restore import TrainedModels, load_run  # noqa: E402

MODELS = (("mp0", "mask_prob=0"), ("mp0.5", "mask_prob=0.5"))


def spill(models: TrainedModels, cfg: AuditConfig, test: list) -> np.ndarray:
    """Tolerant E_out of the audit's CAM on each test image's lung-only input (N,)."""
    s = StepSettings.resolve(cfg, models)
    d = decode(test, models, cfg, torch.device("cpu"))
    x = lung_only(d.x, d.lungs, s.mask_dilate_px, s.fill_value)
    out = []
    for i in range(0, len(x), cfg.batch_size):
        sl = slice(i, i + cfg.batch_size)
        cam = compute_cam(models.classifier, x[sl], s.target_layer, method=s.cam, out_size=(s.size, s.size), score=s.cam_score,
                          options=s.cam_options)  # fmt: skip
        e = lung_energy(apply_floor(cam.cams, s.cam_floor), d.lungs[sl], s.tolerance_px, fill=s.fill_lungs)
        out.append(np.nan_to_num(e["e_out_tol"].numpy(), nan=1.0))
    return np.concatenate(out)


def records(bench: Path, data_dir: Path, real: bool) -> dict[str, dict[str, np.ndarray]]:
    """Per model: the test rows' signals as arrays, with twin-flip reliance and the spill."""
    test = load_dataset(data_dir).split("test")
    out = {}
    for run, _ in MODELS:
        run_dir = bench / "train" / run
        models = load_run(run_dir, torch.device("cpu"))
        twin = real_bench.twin_predictions(models, test) if real else phantom_bench.twin_predictions(run_dir, test)
        rows = {r["path"]: r for r in csv.DictReader(open(bench / "audit" / run / "audit.csv", newline=""))}
        rs = [rows[s.key] for s in test]
        out[run] = {
            "reliant": np.array([twin[s.key] != r["pred"] for s, r in zip(test, rs)]),
            "flagged": np.array([r["flagged"] == "true" for r in rs]),
            "e_out_tol": np.array([float(r["e_out_tol"] or 1.0) for r in rs]),
            "drop": np.array([float(r["prob_drop"] or 0.0) for r in rs]),
            "flip": np.array([r["flip"] == "true" for r in rs]),
            "marker_flip": np.array([r["marker_flip"] == "true" for r in rs]),
            "reasons": np.array([r["reasons"] or "-" for r in rs]),
            "prob": np.array([float(r["prob_pred"]) for r in rs]),
            "spill": spill(models, run_config(run_dir, []).audit, test),
        }
    return out


def rules(r: dict[str, np.ndarray], threshold: float, drop: float, on_flip: bool) -> dict[str, np.ndarray]:
    high, flip = r["e_out_tol"] > threshold, r["flip"] & on_flip
    return {
        "current": r["flagged"],
        f"E_out needs a drop >= {drop:g}": (high & (r["drop"] >= drop)) | flip | r["marker_flip"],
        f"+ flip needs a drop >= {2 * drop:g}": (high & (r["drop"] >= drop)) | (flip & (r["drop"] >= 2 * drop)) | r["marker_flip"],
        "E_out only": high,
        f"E_out - spill > {drop:g}": r["e_out_tol"] - r["spill"] > drop,
        # a per-run threshold that needs no labels: the 90th percentile of the run's own spill
        "E_out > spill's 90th pct": r["e_out_tol"] > np.quantile(r["spill"], 0.9),
        "marker flip only": r["marker_flip"],
    }


def scores(flag: np.ndarray, reliant: np.ndarray) -> tuple[float, float, float]:
    tp = int((flag & reliant).sum())
    return tp / max(int(flag.sum()), 1), tp / max(int(reliant.sum()), 1), float(flag.mean())


def auroc(reliant: np.ndarray, score: np.ndarray) -> float | None:
    return float(roc_auc_score(reliant, score)) if 0 < reliant.sum() < len(reliant) else None


def listing(name: str, r: dict[str, np.ndarray]) -> list[str]:
    lines = [f"{name}: {len(r['reliant'])} test images, {int(r['reliant'].sum())} reliant, {int(r['flagged'].sum())} flagged"]
    for i in np.flatnonzero(r["flagged"] | r["reliant"]):
        kind = "TP" if r["flagged"][i] and r["reliant"][i] else "FP" if r["flagged"][i] else "FN"
        lines.append(f"  {kind} {r['reasons'][i]:42s} E_out_tol {r['e_out_tol'][i]:.2f}  drop {r['drop'][i]:+.2f}  p {r['prob'][i]:.2f}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantom", type=Path, default=ROOT / "runs/bench/validity_v2", help="bench_audit_validity.py --recipe default output")
    ap.add_argument("--real", type=Path, default=ROOT / "runs/bench/validity_real", help="bench_audit_validity_real.py output")
    ap.add_argument("--threshold", type=float, default=0.5, help="the audit's out_threshold")
    ap.add_argument("--drop", type=float, default=0.1, help="probability drop that corroborates heat outside the lungs")
    ap.add_argument("--record", action="store_true", help="write the BENCHMARKS.md section")
    args = ap.parse_args()
    phantom_data = next(args.phantom.glob("data_*"), None)
    if phantom_data is None or not (args.real / "data").is_dir():
        ap.error(f"no benchmark output in {args.phantom} and {args.real}: run both validity benchmarks first (see this script's docstring)")
    benches = {"phantom": records(args.phantom, phantom_data, False), "real": records(args.real, args.real / "data", True)}
    table: list[list[Any]] = []
    for bench, models in benches.items():
        for run, label in MODELS:
            r = models[run]
            print("\n".join(listing(f"{bench}, {label}", r)))
            for rule, flag in rules(r, args.threshold, args.drop, run != "mp0").items():
                table.append([bench, label, f"{r['reliant'].mean():.3f}", rule, *(f"{v:.2f}" for v in scores(flag, r["reliant"]))])
    md = ["| benchmark | model | reliance | rule | precision | recall | flag rate |", "|---|---|---:|---|---:|---:|---:|"]
    md += ["| " + " | ".join(row) + " |" for row in table]
    au = ["| benchmark | model | E_out_tol | E_out_tol x drop | drop | E_out_tol - spill | spill: median, 90th pct |",
          "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for bench, models in benches.items():
        for run, label in MODELS:
            r = models[run]
            vals = [auroc(r["reliant"], s) for s in (r["e_out_tol"], r["e_out_tol"] * r["drop"].clip(0), r["drop"], r["e_out_tol"] - r["spill"])]
            q = np.quantile(r["spill"], [0.5, 0.9])
            au.append(f"| {bench} | {label} | " + " | ".join("—" if v is None else f"{v:.3f}" for v in vals) + f" | {q[0]:.2f}, {q[1]:.2f} |")
    print("\n".join(md + [""] + au))
    if args.record:
        cmd = " ".join(["python scripts/analyse_flag_rules.py", *sys.argv[1:]])
        head = (f"What-if scores of other flag rules on the audits the two validity benchmarks left (no retraining). Command: `{cmd}`. "
                "Masking-flip rules apply to the mask-trained model only, as `flag_on_flip: auto` does.")  # fmt: skip
        write_benchmark_section(ROOT / "BENCHMARKS.md", "Audit flag rules, what if", "\n".join([head, "", *md, "", "AUROC for twin-flip reliance:", "", *au]))


if __name__ == "__main__":
    main()
