"""Reading and validating audit directories."""

from __future__ import annotations

import json

import pytest

from lungaudit.report.auditdir import AuditDirError, load_audit_dir, load_summary

from .conftest import edit_summary


def test_valid_dir_loads(make_audit):
    a = load_audit_dir(make_audit())
    assert len(a.rows) == 24
    assert a.summary.counts.flagged == len(a.flagged) > 0
    ne = [r for r in a.rows if r.no_evidence]
    assert len(ne) == 1 and ne[0].e_in is None  # empty cell -> unavailable, never a silent 0
    assert a.warnings == []
    assert set(a.rows[0].probs) == set(a.class_names)


def test_missing_summary(make_audit):
    d = make_audit()
    (d / "summary.json").unlink()
    with pytest.raises(AuditDirError, match="summary.json: missing"):
        load_summary(d)


def test_not_a_dir(tmp_path):
    with pytest.raises(AuditDirError, match="not an audit directory"):
        load_summary(tmp_path / "nope")


def test_invalid_json(make_audit):
    d = make_audit()
    (d / "summary.json").write_text("{not json")
    with pytest.raises(AuditDirError, match="not valid JSON"):
        load_summary(d)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda s: s.pop("counts"), "counts: Field required"),
        (lambda s: s["overall"].__setitem__("flag_rate", "high"), "overall.flag_rate: Input should be a valid number"),
        (lambda s: s["per_class"]["COVID"].__setitem__("n", 2.5), r"per_class.COVID.n: Input should be a valid integer"),
        (lambda s: s.__setitem__("class_names", "COVID"), "class_names: Input should be a valid list"),
        (lambda s: s["metrics"].__setitem__("confusion", [[1, 2]]), "metrics.confusion"),
        (lambda s: s["e_in_histogram"]["counts"].pop(), "e_in_histogram"),
        (lambda s: s.__setitem__("schema_version", 7), "unsupported version 7"),
        (lambda s: s["checkpoints"]["cls"].pop("sha256"), "checkpoints.cls.sha256: Field required"),
        # impossible statistics are refused, not gated on (issue 12)
        (lambda s: s["overall"].__setitem__("flag_rate", -5), "overall.flag_rate: Input should be greater than or equal to 0"),
        (lambda s: s["overall"].__setitem__("mean_e_in", 5), "overall.mean_e_in: Input should be less than or equal to 1"),
        (lambda s: s["overall"].__setitem__("mean_e_in", float("inf")), "overall.mean_e_in"),
        (lambda s: s["counts"].__setitem__("flagged", 10**6), "flagged .* exceeds audited"),
        (lambda s: s["per_source"]["source-A"].__setitem__("flip_rate", 1.5), "per_source.source-A.flip_rate"),
    ],
)
def test_malformed_summary_names_file_and_key(make_audit, edit, match):
    d = make_audit()
    edit_summary(d, edit)
    with pytest.raises(AuditDirError, match=match) as e:
        load_summary(d)
    assert "summary.json" in str(e.value)


def test_nan_in_summary_is_unavailable(make_audit):
    d = make_audit()
    text = (d / "summary.json").read_text()
    s = json.loads(text)
    s["overall"]["mean_e_in"] = float("nan")  # json.dumps writes a bare NaN
    (d / "summary.json").write_text(json.dumps(s))
    assert load_summary(d).overall.mean_e_in is None


def test_missing_csv_column(make_audit):
    d = make_audit()
    lines = (d / "audit.csv").read_text().splitlines()
    lines[0] = lines[0].replace("e_out_tol", "e_out_tolerant")
    (d / "audit.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditDirError, match="missing column.*e_out_tol"):
        load_audit_dir(d)


def test_bad_bool_names_line_and_column(make_audit):
    d = make_audit()
    text = (d / "audit.csv").read_text().replace(",false,", ",maybe,", 1)
    (d / "audit.csv").write_text(text)
    with pytest.raises(AuditDirError, match=r"line 2, column \w+: expected true/false"):
        load_audit_dir(d)


def test_flag_count_mismatch_is_a_warning(make_audit):
    d = make_audit()
    edit_summary(d, lambda s: s["counts"].__setitem__("flagged", s["counts"]["flagged"] - 1))
    a = load_audit_dir(d)
    assert any("flagged" in w for w in a.warnings)


def test_overlay_outside_dir_refused(make_audit):
    a = load_audit_dir(make_audit())
    with pytest.raises(AuditDirError, match="outside the audit directory"):
        a.resolve("../../etc/passwd")
