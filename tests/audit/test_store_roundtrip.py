"""The rows an audit's summary is computed from are exactly the rows in audit.csv.

Found by scripts/stress_audit.py: a resumed audit's rows came back from the CSV (6 significant
digits) while an uninterrupted audit kept full-precision rows in memory, so the same audit.csv gave
two summaries (ROC-AUC differed in the 5th decimal through ties). Both now aggregate what is on disk.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lungaudit.audit.schema import AuditRow
from lungaudit.audit.store import AUDIT_CSV, AuditStore, StoredRow
from lungaudit.report.auditdir import read_audit_csv

CLASSES = ["COVID", "Normal"]


def _row(i: int, rng: np.random.Generator) -> AuditRow:
    p = float(rng.uniform(0.5, 1.0))  # many digits: 0.7318429153...
    e_in = float(rng.uniform(0, 1))
    return AuditRow(
        key=f"img/{i}.png", path=f"/d/img/{i}.png", label=CLASSES[i % 2], mask_source="given", pred=CLASSES[i % 2],
        prob_pred=p, pred_masked=CLASSES[i % 2], prob_masked=p / 3, prob_drop=p - p / 3, flip=False, e_in=e_in,
        e_in_tol=e_in, e_out=1 - e_in, e_out_tol=1 - e_in, e_in_ratio=e_in / 0.3, lung_area=0.3, no_evidence=False,
        pred_without_markers=CLASSES[i % 2], flagged=False, probs={CLASSES[0]: p, CLASSES[1]: 1 - p},
    )  # fmt: skip


def _fields(row: AuditRow | StoredRow) -> tuple:
    """What the summary reads of a row (the attributes StoredRow keeps), comparable across both types."""
    return (*(getattr(row, k) for k in StoredRow.__slots__[:-2]), row.probs)


def test_flushed_rows_are_the_rows_on_disk(tmp_path):
    rng = np.random.default_rng(0)
    rows = [_row(i, rng) for i in range(5)]
    assert any(len(repr(r.prob_pred)) > 10 for r in rows)  # the precision the CSV does not keep
    with AuditStore(tmp_path, CLASSES, {"id": 1}, resume=False, map_side=4) as store:
        store.add(rows, torch.zeros(5, dtype=torch.long), torch.zeros(5, 4, 4))
        store.flush()
        in_memory = [_fields(r) for r in store.done]
    on_disk = [_fields(r) for r in read_audit_csv(tmp_path / AUDIT_CSV, CLASSES)]
    assert in_memory == on_disk
    # and a reopened (resumed) store holds the very same rows
    with AuditStore(tmp_path, CLASSES, {"id": 1}, resume=True, map_side=4) as store:
        assert [_fields(r) for r in store.done] == in_memory
    assert in_memory != [_fields(r) for r in rows]  # full precision in memory would differ from the CSV
    assert all(math.isclose(a.e_in, b[StoredRow.__slots__.index("e_in")], rel_tol=1e-5) for a, b in zip(rows, in_memory))
