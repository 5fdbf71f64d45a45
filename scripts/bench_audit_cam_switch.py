#!/usr/bin/env python
"""The same trained models audited with another explanation method: before/after on both validity benchmarks.

Needs the two validity benchmarks' output folders (their trained models): ``bench_audit_validity.py
--recipe default --out runs/bench/validity_v2`` and ``bench_audit_validity_real.py --out
runs/bench/validity_real``. For each it makes a sibling folder ``<out>_<cam>`` whose ``train/`` and
data link to the original (nothing is retrained), reruns the benchmark there with ``--reuse --set
audit.cam=<cam>``, and sets the two JSON summaries side by side. ``--record`` writes the BENCHMARKS.md
section.

    python scripts/bench_audit_cam_switch.py --cam guided_gradcam --record
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
from _bench_common import write_benchmark_section  # noqa: E402

KEYS = ("reliance_rate", "auroc_e_out_tol", "auroc_e_out", "flag_precision", "flag_recall", "flag_rate", "marker_flip_precision",
        "tp_hotspot_on_cue", "flagged_region_is_cues", "flagged_in_marker_corner")  # fmt: skip


def linked_copy(src: Path, cam: str) -> Path:
    """``<src>_<cam>`` with the trained models and data linked from ``src`` (its audits stay its own)."""
    dst = src.with_name(f"{src.name}_{cam}")
    dst.mkdir(parents=True, exist_ok=True)
    for entry in [src / "train", *src.glob("data*")]:
        if entry.is_dir() and not (dst / entry.name).exists():
            (dst / entry.name).symlink_to(entry.resolve(), target_is_directory=True)
    return dst


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), file=sys.stderr)
    subprocess.run([sys.executable, *cmd], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def models(path: Path) -> dict[str, dict[str, Any]]:
    doc = json.loads(path.read_text())
    return doc["models"] if "models" in doc else doc


def _f(v: Any) -> str:
    return "—" if v is None else f"{v:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cam", default="guided_gradcam", help="the method to compare with the default audit's")
    ap.add_argument("--phantom", type=Path, default=ROOT / "runs/bench/validity_v2")
    ap.add_argument("--real", type=Path, default=ROOT / "runs/bench/validity_real")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    from lungaudit.explain.cam import CAM_METHODS

    if args.cam not in CAM_METHODS:
        ap.error(f"unknown --cam {args.cam!r}; registered: {', '.join(CAM_METHODS.names())}")
    if not (args.phantom / "train").is_dir() or not (args.real / "train").is_dir():
        ap.error(f"no trained models in {args.phantom}/train and {args.real}/train: run both validity benchmarks first (see this script's docstring)")
    ph, re = linked_copy(args.phantom, args.cam), linked_copy(args.real, args.cam)
    common = ["--reuse", "--set", f"audit.cam={args.cam}"]
    run(["scripts/bench_audit_validity.py", "--recipe", "default", "--out", str(ph), "--no-record", *common])
    run(["scripts/bench_audit_validity_real.py", "--out", str(re), *common])
    # the baselines rerun too, so both columns come from this checkout's audit
    run(["scripts/bench_audit_validity.py", "--recipe", "default", "--out", str(args.phantom), "--no-record", "--reuse"])
    run(["scripts/bench_audit_validity_real.py", "--out", str(args.real), "--reuse"])
    pairs = {
        "phantoms": (models(args.phantom / "validity.json"), models(ph / "validity.json")),
        "real": (models(args.real / "validity_real.json"), models(re / "validity_real.json")),
    }
    head, rows = ["metric"], {k: [k] for k in KEYS}
    for bench, (before, after) in pairs.items():
        for label in before:
            short = "mp0" if label.startswith("mask_prob=0 ") or label == "mask_prob=0" else "mp0.5"
            head += [f"{bench} {short}: default", args.cam]
            for k in KEYS:
                rows[k] += [_f(before[label].get(k)), _f(after[label].get(k))]
    table = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1), *("| " + " | ".join(r) + " |" for r in rows.values())]
    causes = []
    before, after = pairs["real"]
    for label in before:
        b, a = before[label]["flags"]["false_alarm_causes"], after[label]["flags"]["false_alarm_causes"]
        causes.append(f"{label}: " + ", ".join(f"{c} {b[c]} → {a[c]}" for c in b))
    print("\n".join(table))
    if args.record:
        cmd = " ".join(["python scripts/bench_audit_cam_switch.py", *sys.argv[1:]])
        body = [
            f"The same trained models, audited with the default `audit.cam` and with `audit.cam: {args.cam}`. Command: `{cmd}` "
            "(reruns both validity benchmarks with `--reuse`, nothing retrained).",
            "",
            *table,
            "",
            "False alarms on real films by most likely cause (default → " + args.cam + "): " + "; ".join(causes) + ".",
        ]
        write_benchmark_section(ROOT / "BENCHMARKS.md", f"Audit driven by {args.cam}: before/after (phantoms and real anatomy)", "\n".join(body))


if __name__ == "__main__":
    main()
