"""Compare two audits of the same data set: did the candidate model get worse at looking at lungs?

Only audits of the identical data set (same ``dataset.fingerprint``) are comparable; anything else
compares two different populations and is refused. A regression is a change in the bad direction by
more than ``tolerance`` (absolute, on rates in [0, 1]) in any of: flag rate up, mean E_in down, flip
rate up, accuracy down, overall or in any class or source.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lungaudit.audit.schema import GroupStats, Summary
from lungaudit.report.auditdir import load_summary
from lungaudit.utils import atomic_write_json

COMPARE_JSON = "compare.json"
# statistic -> +1 when higher is worse, -1 when lower is worse
DIRECTIONS: dict[str, int] = {"flag_rate": +1, "mean_e_in": -1, "flip_rate": +1, "accuracy": -1}
_EPS = 1e-9  # float noise must not turn "exactly at tolerance" into a regression


class CompareError(ValueError):
    """Two audits that cannot be compared (exit code 2)."""


def _val(v: Any) -> float | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return float(v)


def _ident(s: Summary) -> dict[str, Any]:
    return {"created": s.created, "run_dir": s.run_dir, "cls_sha256": s.checkpoints.cls.sha256,
            "lungaudit_version": s.lungaudit_version}


def _config_changes(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b), key=str):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_changes(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def compare_summaries(base: Summary, cand: Summary, tolerance: float = 0.02) -> dict[str, Any]:
    """Deltas candidate - baseline for every scope and statistic, and which of them regress.

    ``base``/``cand`` are validated summaries (``load_summary``). Raises ``CompareError`` when the
    data set fingerprints differ or the tolerance is negative.
    """
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0 and not math.isnan(tolerance)):
        raise CompareError(f"tolerance must be a number >= 0, got {tolerance!r}")
    fb, fc = base.dataset.fingerprint, cand.dataset.fingerprint
    if fb != fc:
        raise CompareError(
            f"the audits are of different data sets (fingerprint {fb[:12]}… vs {fc[:12]}…); "
            "re-run both audits on the same images to compare models"
        )
    rows: list[dict[str, Any]] = []
    scopes: list[tuple[str, str | None, GroupStats | None, GroupStats | None]] = [
        ("overall", None, base.overall, cand.overall)
    ]
    for scope, key in (("class", "per_class"), ("source", "per_source")):
        bg, cg = getattr(base, key), getattr(cand, key)
        names = list(bg) + [n for n in cg if n not in bg]
        scopes += [(scope, n, bg.get(n), cg.get(n)) for n in names]

    for scope, group, b, c in scopes:
        for stat, sign in DIRECTIONS.items():
            vb = None if b is None else _val(getattr(b, stat))
            vc = None if c is None else _val(getattr(c, stat))
            row: dict[str, Any] = {
                "scope": scope, "group": group, "metric": stat,
                "baseline": vb, "candidate": vc, "delta": None, "worse_by": None,
                "regressed": False, "note": "",
            }
            if b is None or c is None:
                row["note"] = "only in candidate" if b is None else "only in baseline"
            elif vb is None or vc is None:
                row["note"] = "value unavailable"
            else:
                row["delta"] = vc - vb
                row["worse_by"] = sign * (vc - vb)
                row["regressed"] = row["worse_by"] > tolerance + _EPS
            rows.append(row)
    regressions = [r for r in rows if r["regressed"]]
    return {
        "tolerance": float(tolerance),
        "dataset_fingerprint": fb,
        "baseline": _ident(base),
        "candidate": _ident(cand),
        "config_changes": _config_changes(base.config, cand.config),
        "regressed": bool(regressions),
        "n_regressions": len(regressions),
        "rows": rows,
        "regressions": regressions,
    }


def compare_audits(
    baseline_dir: str | Path, candidate_dir: str | Path, tolerance: float = 0.02, out: str | Path | None = None
) -> tuple[dict[str, Any], Path]:
    """Load both audit dirs, compare them and write ``compare.json`` (default: in the candidate dir)."""
    base, cand = load_summary(baseline_dir), load_summary(candidate_dir)
    result = compare_summaries(base, cand, tolerance)
    result = {"baseline_dir": str(baseline_dir), "candidate_dir": str(candidate_dir), **result}
    path = Path(out) if out is not None else Path(candidate_dir) / COMPARE_JSON
    atomic_write_json(path, result)
    return result, path
