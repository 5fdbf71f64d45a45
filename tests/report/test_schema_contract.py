"""The audit stage's own aggregator must produce a summary the report stage accepts."""

from __future__ import annotations

import json

import pytest

from lungaudit.report.auditdir import load_audit_dir, validate_summary

from .conftest import CLASSES, read_rows


@pytest.mark.parametrize("labeled", [True, False])
def test_aggregate_rows_output_validates(make_audit, labeled):
    aggregate = pytest.importorskip("lungaudit.audit.aggregate")
    d = make_audit(labeled=labeled)
    summary = json.loads((d / "summary.json").read_text())
    blocks = aggregate.aggregate_rows(read_rows(d), CLASSES)
    counts = {**summary["counts"], **blocks.pop("counts")}
    summary.update(blocks, counts=counts)
    summary = json.loads(json.dumps(summary))  # what would land on disk
    validate_summary(summary)
    (d / "summary.json").write_text(json.dumps(summary))
    a = load_audit_dir(d)
    assert a.warnings == []
