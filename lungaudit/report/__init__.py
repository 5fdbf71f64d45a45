"""Report stage: HTML bias report, release gate, audit comparison and the review loop.

Everything here reads the files ``lungaudit audit`` writes (``audit.csv`` + ``summary.json`` +
images); nothing imports the model. Each CLI command has a Python twin:

- ``lungaudit report``       -> ``write_report(audit_dir)``
- ``lungaudit gate``         -> ``run_gate(audit_dir, policy)`` / ``evaluate_gate(summary, policy)``
- ``lungaudit compare``      -> ``compare_audits(base, cand)`` / ``compare_summaries(base, cand, tol)``
- ``lungaudit apply-review`` -> ``apply_review(decisions, dataset, out)`` / ``apply_decisions(samples, decisions)``
"""

from lungaudit.report.auditdir import AuditDir, AuditDirError, AuditRow, load_audit_dir, load_summary, validate_summary
from lungaudit.report.compare import CompareError, compare_audits, compare_summaries
from lungaudit.report.gate import GateError, GatePolicy, GateResult, evaluate_gate, load_policy, policy_from_dict, run_gate
from lungaudit.report.html import render_report, write_report
from lungaudit.report.review import (
    Decision,
    ReviewError,
    apply_decisions,
    apply_review,
    parse_decisions,
    read_decisions,
    write_manifest,
)

__all__ = [
    "AuditDir", "AuditDirError", "AuditRow", "CompareError", "Decision", "GateError", "GatePolicy", "GateResult",
    "ReviewError", "apply_decisions", "apply_review", "compare_audits", "compare_summaries", "evaluate_gate",
    "load_audit_dir", "load_policy", "load_summary", "parse_decisions", "policy_from_dict", "read_decisions",
    "render_report", "run_gate", "validate_summary", "write_manifest", "write_report",
]
