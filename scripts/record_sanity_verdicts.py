"""Record a ``lungaudit sanity`` run's verdicts as the ones the package shows (``MethodInfo.sanity``).

Copies, for each method the run measured, its verdict and both tests' correlations from
``runs/sanity/<name>/sanity.json`` into ``lungaudit/explain/sanity_verdicts.json``, with the run's
provenance (run, model, images, date). Methods the run did not measure are left out: no verdict is
ever written for a method without its measurement.

    python scripts/record_sanity_verdicts.py runs/sanity/phantom/sanity.json [--benchmarks]

``--benchmarks`` also writes the BENCHMARKS.md section "Explanation methods: sanity checks" (every
method's correlations, verdicts and seconds) from the same file.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
from _bench_common import write_benchmark_section  # noqa: E402

from lungaudit.explain.verdicts import VERDICTS, packaged_verdicts  # noqa: E402
from lungaudit.utils import atomic_write_json  # noqa: E402

KEEP = ("spearman", "ssim", "verdict")


def verdict_record(rec: dict) -> dict:
    """The part of a method's sanity.json record that the package keeps."""
    return {
        "verdict": rec["verdict"],
        "model_randomization": {k: rec["model_randomization"].get(k) for k in KEEP},
        "data_randomization": {k: rec["data_randomization"].get(k) for k in KEEP},
        "options": rec.get("options", {}),
    }


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def benchmarks_section(doc: dict, command: str, packaged: bool = True) -> str:
    """Every measured method's correlations and verdicts as a markdown table, with the run's provenance."""
    src, st, rl = doc["source"], doc["settings"], doc.get("random_labels") or {}
    lines = [
        f"Measured {src.get('date')} with `lungaudit sanity` on `{src.get('run')}` ({src.get('model')}; {src.get('images')}, "
        f"seed {st.get('seed')}); score {st.get('score')}, target layer {st.get('target_layer')}; "
        f"{st.get('similarity')}. Random-label model: {rl.get('epochs')} epoch(s) on permuted labels "
        f"(validation accuracy on the true labels {_f(rl.get('val_accuracy_true_labels'))}, chance {_f(rl.get('chance'))}). "
        f"A method fails a test when its maps correlate above {st['threshold']} with the randomised model's. "
        + ("Recorded into `lungaudit/explain/sanity_verdicts.json` (shown by `lungaudit explain --list`, warned by the audit) with "
           if packaged else "This table only (the packaged verdicts come from another run): ")
        + f"`{command}`.",
        "",
        "| method | kind | options | ρ after each cascade stage | ρ all layers random | model test | ρ random labels | SSIM random labels "
        "| data test | verdict | seconds |",
        "|---|---|---|---|---:|---|---:|---:|---|---|---:|",
    ]
    for m, r in doc["methods"].items():
        mr, dr = r["model_randomization"], r["data_randomization"]
        stages = " → ".join(f"{v:.2f}" for v in mr.get("mean_spearman") or [])
        opts = ", ".join(f"{k}={v}" for k, v in (r.get("options") or {}).items()) or "defaults"
        lines.append(f"| {m} | {r.get('kind', '')} | {opts} | {stages} | {_f(mr.get('spearman'))} | {mr.get('verdict')} | "
                     f"{_f(dr.get('spearman'))} | {_f(dr.get('ssim'))} | {dr.get('verdict')} | **{r['verdict']}** | {r.get('seconds', 0):.1f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sanity_json", type=Path)
    ap.add_argument("--out", type=Path, default=packaged_verdicts())
    ap.add_argument("--benchmarks", action="store_true", help="also write the BENCHMARKS.md section")
    ap.add_argument("--section", default="Explanation methods: sanity checks", help="with --benchmarks: the section's title")
    ap.add_argument("--table-only", action="store_true", help="write only the BENCHMARKS.md section, not the packaged verdicts")
    args = ap.parse_args()
    try:
        doc = json.loads(args.sanity_json.read_text(encoding="utf-8"))
        doc["methods"], doc["source"], doc["settings"]["threshold"]  # noqa: B018 - what this script reads
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        ap.error(f"{args.sanity_json}: not a readable sanity.json from lungaudit sanity ({type(e).__name__}: {e})")
    methods = {m: verdict_record(r) for m, r in doc["methods"].items() if r["verdict"] in VERDICTS}
    source = {**doc["source"], "threshold": doc["settings"]["threshold"], "from": str(args.sanity_json)}
    if not args.table_only:
        atomic_write_json(args.out, {"source": source, "methods": methods})
        listed = ", ".join(f"{m}={r['verdict']}" for m, r in methods.items())
        print(f"{args.out}: {len(methods)} verdict(s) ({listed})")
    if args.benchmarks or args.table_only:
        command = "python " + shlex.join(["scripts/record_sanity_verdicts.py", *sys.argv[1:]])
        write_benchmark_section(ROOT / "BENCHMARKS.md", args.section, benchmarks_section(doc, command, not args.table_only))


if __name__ == "__main__":
    main()
