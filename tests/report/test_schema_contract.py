"""The audit stage's own aggregator must produce a summary the report stage accepts."""

from __future__ import annotations

import json

import pytest

from lungaudit.audit.aggregate import aggregate_rows
from lungaudit.report.auditdir import load_audit_dir, read_audit_csv, validate_summary

from .conftest import CLASSES


@pytest.mark.parametrize("labeled", [True, False])
def test_rows_read_back_aggregate_to_the_written_summary(make_audit, labeled):
    d = make_audit(labeled=labeled)
    summary = json.loads((d / "summary.json").read_text())
    blocks = aggregate_rows(read_audit_csv(d / "audit.csv", CLASSES), CLASSES)
    counts = {**summary["counts"], **blocks.pop("counts")}
    rebuilt = validate_summary({**summary, **json.loads(json.dumps(blocks, default=lambda m: m.model_dump())), "counts": counts})
    # The CSV round trip (6 significant digits) loses nothing the summary needs.
    got, want = _flat(rebuilt.model_dump()), _flat(validate_summary(summary).model_dump())
    assert got.keys() == want.keys()
    numbers = [k for k, v in want.items() if isinstance(v, float)]
    assert [got[k] for k in numbers] == pytest.approx([want[k] for k in numbers], rel=1e-5)
    assert {k: v for k, v in got.items() if k not in numbers} == {k: v for k, v in want.items() if k not in numbers}
    assert load_audit_dir(d).warnings == []


def _flat(obj, prefix=""):
    """Nested dicts/lists -> {dotted key: leaf}, so pytest.approx can compare the numbers."""
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _flat(val, f"{prefix}{key}.").items()}
    if isinstance(obj, list):
        return {k: v for i, val in enumerate(obj) for k, v in _flat(val, f"{prefix}{i}.").items()}
    return {prefix: obj if isinstance(obj, (int, float)) and not isinstance(obj, bool) else str(obj)}
