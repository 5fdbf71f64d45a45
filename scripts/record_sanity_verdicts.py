"""Record a ``lungaudit sanity`` run's verdicts as the ones the package shows (``MethodInfo.sanity``).

Copies, for each method the run measured, its verdict and both tests' correlations from
``runs/sanity/<name>/sanity.json`` into ``lungaudit/explain/sanity_verdicts.json``, with the run's
provenance (run, model, images, date). Methods the run did not measure are left out: no verdict is
ever written for a method without its measurement.

    python scripts/record_sanity_verdicts.py runs/sanity/phantom/sanity.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sanity_json", type=Path)
    ap.add_argument("--out", type=Path, default=packaged_verdicts())
    args = ap.parse_args()
    doc = json.loads(args.sanity_json.read_text())
    methods = {m: verdict_record(r) for m, r in doc["methods"].items() if r["verdict"] in VERDICTS}
    source = {**doc["source"], "threshold": doc["settings"]["threshold"], "from": str(args.sanity_json)}
    atomic_write_json(args.out, {"source": source, "methods": methods})
    listed = ", ".join(f"{m}={r['verdict']}" for m, r in methods.items())
    print(f"{args.out}: {len(methods)} verdict(s) ({listed})")


if __name__ == "__main__":
    main()
