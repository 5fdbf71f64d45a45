"""Comparing two audits of the same data set."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import lungaudit.cli.cmd_report  # noqa: F401
from lungaudit.cli.app import app
from lungaudit.report.auditdir import load_summary
from lungaudit.report.compare import CompareError, compare_summaries


def compare(*args):
    return CliRunner().invoke(app, ["compare", *map(str, args)])


def test_identical_passes(make_audit):
    a, b = make_audit("base"), make_audit("cand")
    res = compare(a, b)
    assert res.exit_code == 0, res.output
    out = json.loads((b / "compare.json").read_text())
    assert out["regressed"] is False and out["n_regressions"] == 0
    assert all(r["delta"] == 0 for r in out["rows"] if r["delta"] is not None)


def test_planted_regression(make_audit, tmp_path):
    a = make_audit("base")
    b = make_audit("cand", mutate=lambda s: s["per_source"]["source-B"].__setitem__(
        "mean_e_in", s["per_source"]["source-B"]["mean_e_in"] - 0.1))
    out = tmp_path / "cmp.json"
    res = compare(a, b, "--out", out)
    assert res.exit_code == 1, res.output
    data = json.loads(out.read_text())
    [reg] = data["regressions"]
    assert (reg["scope"], reg["group"], reg["metric"]) == ("source", "source-B", "mean_e_in")
    # the same drop is within a generous tolerance
    assert compare(a, b, "--tolerance", 0.2, "--out", out).exit_code == 0


def _overall(make_audit, name, **stats):
    def edit(s):
        s["overall"].update(stats)
        s["per_class"], s["per_source"] = {}, {}

    return load_summary(make_audit(name, mutate=edit))


def test_improvement_is_not_regression(make_audit):
    s = _overall(make_audit, "s", flag_rate=0.3, mean_e_in=0.5, flip_rate=0.2, accuracy=0.8)
    better = _overall(make_audit, "better", flag_rate=0.1, mean_e_in=0.7, flip_rate=0.0, accuracy=0.95)
    assert not compare_summaries(s, better, 0.0)["regressed"]
    r = compare_summaries(better, s, 0.0)
    assert r["n_regressions"] == 4
    edge = _overall(make_audit, "edge", flag_rate=0.3, mean_e_in=0.5, flip_rate=0.2, accuracy=0.78)
    assert not compare_summaries(s, edge, 0.02)["regressed"]  # exactly at tolerance: not a regression


def test_mismatched_fingerprint_refused(make_audit):
    a = make_audit("base")
    b = make_audit("cand", fingerprint="0" * 64)
    res = compare(a, b)
    assert res.exit_code == 2
    assert "different data sets" in res.output
    assert not (b / "compare.json").exists()
    with pytest.raises(CompareError):
        compare_summaries(load_summary(a), load_summary(b), 0.02)


def test_config_change_is_reported(make_audit):
    a = make_audit("base")
    b = make_audit("cand", mutate=lambda s: s["config"].__setitem__("out_threshold", 0.6))
    res = compare(a, b)
    assert res.exit_code == 0
    assert "out_threshold" in res.output


def test_missing_audit_exit_2(make_audit, tmp_path):
    assert compare(make_audit(), tmp_path / "nope").exit_code == 2
