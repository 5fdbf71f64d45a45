"""Release gate: pass/fail conditions on an audit's ``summary.json``, for CI.

A policy is a set of limits (``max_flag_rate``, ``min_mean_in_lung``, ``min_accuracy``,
``max_flip_rate``) applied to the whole audit, to single classes and to single data sources. It comes
from YAML (the packaged ``gate.yaml``, or your own) and/or the command line; CLI values win. Each limit becomes one
condition; a condition whose value is unavailable (accuracy of an unlabeled audit, a class with no
images) *fails* with reason "value unavailable": a gate must never pass because it could not look.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


from lungaudit.audit.schema import Summary
from lungaudit.config import ConfigError, read_yaml_mapping
from lungaudit.report.auditdir import load_audit_dir
from lungaudit.utils import atomic_write_bytes, atomic_write_json

GATE_JSON = "gate.json"
GATE_JUNIT = "gate.junit.xml"

# policy key -> (summary statistic, comparison, human name)
CONDITIONS: dict[str, tuple[str, str, str]] = {
    "max_flag_rate": ("flag_rate", "<=", "flag rate"),
    "min_mean_in_lung": ("mean_e_in", ">=", "mean in-lung energy E_in"),
    "min_accuracy": ("accuracy", ">=", "accuracy"),
    "max_flip_rate": ("flip_rate", "<=", "flip rate under masking"),
}
SCOPES = ("overall", "class", "source")


class GateError(ValueError):
    """A policy or an input the gate cannot evaluate (exit code 2, not a failed gate)."""


Limits = dict[str, float]


@dataclass(frozen=True)
class GatePolicy:
    """Limits per scope. Keys of each ``Limits`` are names from ``CONDITIONS``."""

    overall: Limits = field(default_factory=dict)
    per_class: dict[str, Limits] = field(default_factory=dict)
    per_source: dict[str, Limits] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (self.overall or any(self.per_class.values()) or any(self.per_source.values()))

    def merged(self, other: "GatePolicy") -> "GatePolicy":
        """``other``'s limits override (and add to) this policy's."""

        def merge(a: dict[str, Limits], b: dict[str, Limits]) -> dict[str, Limits]:
            out = {k: dict(v) for k, v in a.items()}
            for k, v in b.items():
                out.setdefault(k, {}).update(v)
            return out

        return GatePolicy(
            overall={**self.overall, **other.overall},
            per_class=merge(self.per_class, other.per_class),
            per_source=merge(self.per_source, other.per_source),
        )

    def conditions(self) -> list["Condition"]:
        out = [Condition(n, "overall", None, v) for n, v in self.overall.items()]
        for scope, groups in (("class", self.per_class), ("source", self.per_source)):
            out += [Condition(n, scope, g, v) for g, lim in groups.items() for n, v in lim.items()]
        return out


@dataclass(frozen=True)
class Condition:
    name: str  # a key of CONDITIONS
    scope: str  # overall | class | source
    group: str | None  # class or source name; None for overall
    limit: float

    @property
    def metric(self) -> str:
        return CONDITIONS[self.name][0]

    @property
    def op(self) -> str:
        return CONDITIONS[self.name][1]

    @property
    def where(self) -> str:
        return "overall" if self.group is None else f"{self.scope} {self.group}"


@dataclass(frozen=True)
class ConditionResult:
    condition: Condition
    value: float | None
    passed: bool
    reason: str  # empty when passed

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self.condition), "metric": self.condition.metric, "op": self.condition.op,
                "value": self.value, "passed": self.passed, "reason": self.reason}


@dataclass(frozen=True)
class GateResult:
    audit_dir: str
    results: list[ConditionResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def n_failed(self) -> int:
        return sum(not r.passed for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "audit_dir": self.audit_dir, "n_conditions": len(self.results),
                "n_failed": self.n_failed, "conditions": [r.to_dict() for r in self.results]}


# ---------------------------------------------------------------------------------------------
# policy


def _limit(v: Any, where: str) -> float | None:
    if v is None:
        return None  # null in YAML = condition switched off
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(float(v)):
        raise GateError(f"{where}: expected a number between 0 and 1, got {v!r}")
    if not 0.0 <= float(v) <= 1.0:
        raise GateError(f"{where}: {v} is outside [0, 1] (all gated statistics are rates or fractions)")
    return float(v)


def _limits(d: Any, where: str) -> Limits:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise GateError(f"{where}: expected a mapping of conditions, got {d!r}")
    unknown = sorted(set(d) - set(CONDITIONS))
    if unknown:
        raise GateError(f"{where}: unknown condition(s) {', '.join(map(str, unknown))}; valid: {', '.join(CONDITIONS)}")
    out = {k: _limit(v, f"{where}.{k}") for k, v in d.items()}
    return {k: v for k, v in out.items() if v is not None}


def policy_from_dict(data: Any, source: str = "policy") -> GatePolicy:
    """Build a policy from the YAML structure; unknown keys raise ``GateError``."""
    if data is None:
        return GatePolicy()
    if not isinstance(data, dict):
        raise GateError(f"{source}: must hold a mapping at the top level")
    groups: dict[str, dict[str, Limits]] = {}
    for section in ("per_class", "per_source"):
        sec = data.get(section) or {}
        if not isinstance(sec, dict):
            raise GateError(f"{source}: {section} must map names to conditions")
        groups[section] = {str(k): _limits(v, f"{source}: {section}.{k}") for k, v in sec.items()}
    overall = {k: v for k, v in data.items() if k not in ("per_class", "per_source")}
    return GatePolicy(overall=_limits(overall, source), **groups)


def load_policy(path: str | Path) -> GatePolicy:
    """A YAML policy file (``lungaudit config --dump gate.yaml --policy`` writes the default one)."""
    p = Path(path)
    try:
        data = read_yaml_mapping(p, "policy file")
    except ConfigError as e:
        raise GateError(str(e)) from None
    return policy_from_dict(data, str(p))


def parse_class_limit(item: str, name: str = "max_flag_rate") -> tuple[str, Limits]:
    """``"Viral Pneumonia=0.3"`` -> ``("Viral Pneumonia", {name: 0.3})`` (split at the last '=')."""
    cls, sep, raw = item.rpartition("=")
    if not sep or not cls.strip():
        raise GateError(f"{item!r}: expected CLASS=VALUE")
    try:
        value = float(raw)
    except ValueError:
        raise GateError(f"{item!r}: {raw!r} is not a number") from None
    lim = _limit(value, item)
    assert lim is not None
    return cls.strip(), {name: lim}


# ---------------------------------------------------------------------------------------------
# evaluation


def evaluate_gate(summary: Summary, policy: GatePolicy, audit_dir: str = "") -> GateResult:
    """Evaluate every condition of ``policy`` against a validated summary (see ``load_summary``)."""
    if policy.is_empty():
        raise GateError("no gate conditions given (use --policy or a --max-*/--min-* option)")
    classes = summary.class_names
    unknown = sorted(set(policy.per_class) - set(classes))
    if unknown:
        raise GateError(f"unknown class(es) in per-class conditions: {', '.join(unknown)}; classes: {', '.join(classes)}")
    sources = summary.per_source
    unknown = sorted(set(policy.per_source) - set(sources))
    if unknown:
        known = ", ".join(sources) or "none (the audit has no source metadata)"
        raise GateError(f"unknown source(s) in per-source conditions: {', '.join(unknown)}; sources: {known}")

    results = []
    for c in policy.conditions():
        if c.scope == "overall":
            stats = summary.overall
        else:
            stats = (summary.per_class if c.scope == "class" else summary.per_source).get(c.group)  # type: ignore[arg-type]
        value = None if stats is None else getattr(stats, c.metric)
        if value is None:
            why = "no images in this group" if stats is None or stats.n == 0 else "not computed by the audit"
            if c.metric == "accuracy" and summary.metrics is None:
                why = "the audit has no labels"
            results.append(ConditionResult(c, None, False, f"value unavailable ({why})"))
            continue
        value = float(value)
        ok = value <= c.limit if c.op == "<=" else value >= c.limit
        bad_op = ">" if c.op == "<=" else "<"
        results.append(ConditionResult(c, value, ok, "" if ok else f"{value:.4g} {bad_op} limit {c.limit:.4g}"))
    return GateResult(audit_dir=audit_dir, results=results)


def junit_xml(result: GateResult, suite: str = "lungaudit.gate") -> bytes:
    """One testcase per condition; failed conditions carry a ``<failure>``."""
    root = ET.Element("testsuites", name=suite, tests=str(len(result.results)), failures=str(result.n_failed))
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(result.results)),
                       failures=str(result.n_failed), errors="0", skipped="0")
    props = ET.SubElement(ts, "properties")
    ET.SubElement(props, "property", name="audit_dir", value=result.audit_dir)
    for r in result.results:
        c = r.condition
        classname = f"{suite}.{c.scope}" + (f".{c.group}" if c.group is not None else "")
        name = f"{c.name} {c.op} {c.limit:g}" + (f" [{c.where}]" if c.group is not None else "")
        tc = ET.SubElement(ts, "testcase", classname=classname, name=name, time="0")
        value = "unavailable" if r.value is None else f"{r.value:.6g}"
        if not r.passed:
            fail = ET.SubElement(tc, "failure", message=f"{c.where}: {CONDITIONS[c.name][2]} {r.reason}", type="GateFailure")
            fail.text = f"{c.metric} = {value}; condition {c.name}: {c.metric} {c.op} {c.limit:g}"
        else:
            ET.SubElement(tc, "system-out").text = f"{c.metric} = {value}"
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def run_gate(
    audit_dir: str | Path,
    policy: GatePolicy,
    *,
    junit: str | Path | None = None,
    json_out: str | Path | None = None,
) -> GateResult:
    """Evaluate ``policy`` on an audit dir and write ``gate.json`` and the JUnit XML next to it.

    Raises ``GateError`` (or ``AuditDirError``) for input the gate cannot judge.
    """
    audit_dir = Path(audit_dir)
    loaded = load_audit_dir(audit_dir)
    if loaded.warnings:
        # A gate must not pass on a folder whose rows and summary disagree (two writers, a torn copy).
        raise GateError(f"{audit_dir}: inconsistent audit folder: {'; '.join(loaded.warnings)}")
    summary = loaded.summary
    result = evaluate_gate(summary, policy, str(audit_dir))
    atomic_write_json(Path(json_out) if json_out else audit_dir / GATE_JSON,
                      {**result.to_dict(), "dataset_fingerprint": summary.dataset.fingerprint})
    atomic_write_bytes(Path(junit) if junit else audit_dir / GATE_JUNIT, junit_xml(result))
    return result


__all__ = [
    "CONDITIONS", "Condition", "ConditionResult", "GateError", "GatePolicy", "GateResult",
    "evaluate_gate", "junit_xml", "load_policy", "parse_class_limit", "policy_from_dict", "run_gate",
]
