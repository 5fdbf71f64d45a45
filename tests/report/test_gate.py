"""Release gate: policy parsing, evaluation, exit codes, gate.json and JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

import lungaudit.cli.cmd_report  # noqa: F401
from lungaudit.cli.app import app
from lungaudit.config import packaged_config
from lungaudit.report.auditdir import load_summary
from lungaudit.report.gate import GateError, GatePolicy, evaluate_gate, load_policy, policy_from_dict

from .conftest import edit_summary

REPO = Path(__file__).resolve().parents[2]


def set_rates(s, flag=0.1, ein=0.8, flip=0.05, acc=0.9):
    for g in [s["overall"], *s["per_class"].values(), *s["per_source"].values()]:
        g.update(flag_rate=flag, mean_e_in=ein, flip_rate=flip, accuracy=acc)


def gate(*args):
    return CliRunner().invoke(app, ["gate", *map(str, args)])


def junit(path):
    root = ET.parse(path).getroot()
    cases = root.findall(".//testcase")
    return len(cases), sum(c.find("failure") is not None for c in cases)


def test_all_pass(make_audit):
    d = make_audit(mutate=set_rates)
    res = gate(d, "--max-flag-rate", 0.2, "--min-mean-in-lung", 0.5, "--min-accuracy", 0.8,
               "--max-flip-rate", 0.1, "--class-max-flag-rate", "Viral Pneumonia=0.2")
    assert res.exit_code == 0, res.output
    g = json.loads((d / "gate.json").read_text())
    assert g["passed"] and g["n_conditions"] == 5 and g["n_failed"] == 0
    assert junit(d / "gate.junit.xml") == (5, 0)


def test_per_class_failure(make_audit, tmp_path):
    def bad_covid(s):
        set_rates(s)
        s["per_class"]["COVID"]["flag_rate"] = 0.6

    d = make_audit(mutate=bad_covid)
    out = tmp_path / "ci" / "gate.xml"
    res = gate(d, "--max-flag-rate", 0.2, "--class-max-flag-rate", "COVID=0.3", "--class-max-flag-rate", "Normal=0.3",
               "--junit", out)
    assert res.exit_code == 1, res.output
    assert "FAIL" in res.output
    assert junit(out) == (3, 1)
    failure = ET.parse(out).getroot().find(".//failure")
    assert "class COVID" in failure.get("message")
    g = json.loads((d / "gate.json").read_text())
    [failed] = [c for c in g["conditions"] if not c["passed"]]
    assert failed["group"] == "COVID" and failed["value"] == 0.6


def test_policy_file_and_cli_override(make_audit, tmp_path):
    d = make_audit(mutate=lambda s: set_rates(s, flag=0.3))
    pol = tmp_path / "gate.yaml"
    pol.write_text("max_flag_rate: 0.2\nper_class:\n  COVID:\n    max_flag_rate: 0.5\n")
    assert gate(d, "--policy", pol).exit_code == 1
    res = gate(d, "--policy", pol, "--max-flag-rate", 0.4)  # CLI wins
    assert res.exit_code == 0, res.output
    assert junit(d / "gate.junit.xml") == (2, 0)


def test_shipped_policy_is_valid():
    p = load_policy(packaged_config("gate.yaml"))
    assert p.overall and "COVID" in p.per_class


def test_unavailable_value_fails(make_audit):
    d = make_audit(labeled=False)
    res = gate(d, "--min-accuracy", 0.5)
    assert res.exit_code == 1
    g = json.loads((d / "gate.json").read_text())
    assert g["conditions"][0]["reason"].startswith("value unavailable")
    assert junit(d / "gate.junit.xml") == (1, 1)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--class-max-flag-rate", "Pneumothorax=0.2"], "unknown class"),
        (["--class-max-flag-rate", "COVID"], "CLASS=VALUE"),
        (["--max-flag-rate", "1.5"], "outside"),
    ],
)
def test_bad_input_exit_2(make_audit, args, match):
    res = gate(make_audit(), *args)
    assert res.exit_code == 2
    assert match in res.output


def test_malformed_summary_exit_2(make_audit):
    d = make_audit()
    edit_summary(d, lambda s: s["overall"].pop("flip_rate"))
    res = gate(d, "--max-flip-rate", 0.1)
    assert res.exit_code == 2
    assert "flip_rate" in res.output and "summary.json" in res.output
    (d / "summary.json").unlink()
    assert gate(d, "--max-flip-rate", 0.1).exit_code == 2


def test_unknown_policy_key_exit_2(make_audit, tmp_path):
    pol = tmp_path / "gate.yaml"
    pol.write_text("max_flag_rte: 0.2\n")
    res = gate(make_audit(), "--policy", pol)
    assert res.exit_code == 2 and "max_flag_rte" in res.output
    pol.write_text("per_class:\n  COVID:\n    min_acc: 0.2\n")
    assert gate(make_audit(), "--policy", pol).exit_code == 2


def test_evaluate_gate_pure(make_audit):
    s = load_summary(make_audit(mutate=set_rates))
    pol = policy_from_dict({"max_flag_rate": 0.1, "min_mean_in_lung": 0.81, "per_source": {"source-A": {"max_flip_rate": 0.05}}})
    r = evaluate_gate(s, pol)
    assert [x.passed for x in r.results] == [True, False, True]  # limits are inclusive
    with pytest.raises(GateError, match="unknown source"):
        evaluate_gate(s, GatePolicy(per_source={"nowhere": {"max_flag_rate": 0.1}}))
    assert policy_from_dict({"max_flag_rate": None}).is_empty()


def test_bare_gate_applies_the_packaged_policy(make_audit, tmp_path):
    d = make_audit()
    res = gate(d)
    assert res.exit_code in (0, 1), res.output
    names = {c["name"] for c in json.loads((d / "gate.json").read_text())["conditions"]}
    assert names == {"max_flag_rate", "min_mean_in_lung", "min_accuracy", "max_flip_rate"}
    empty = tmp_path / "empty.yaml"
    empty.write_text("max_flag_rate: null\n")
    res = gate(d, "--policy", empty)
    assert res.exit_code == 2 and "no gate conditions" in res.output
