"""Commands: report, gate, compare, apply-review (thin wrappers over ``lungaudit.report``).

Exit codes everywhere: 0 success / pass, 1 failed gate or regression, 2 malformed input.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

import lungaudit.api as la
from lungaudit.cli.app import app
from lungaudit.cli.common import console, fail, os_error, say
from lungaudit.config import packaged_config
from lungaudit.report.auditdir import AuditDirError
from lungaudit.report.compare import CompareError, compare_audits
from lungaudit.report.gate import GateError, GatePolicy, load_policy, parse_class_limit, policy_from_dict
from lungaudit.report.review import ReviewError


def _f(v: float | None, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


@app.command("report")
def report_cmd(
    audit_dir: Path = typer.Argument(..., help="Audit folder written by `lungaudit audit`."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output HTML path (default: AUDIT_DIR/report.html)."),
) -> None:
    """Write a self-contained HTML bias report (tables, heatmaps, flagged gallery with review controls)."""
    try:
        path = la.report(audit_dir, out)
    except AuditDirError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write the report: {os_error(e)}")
    typer.echo(str(path))


@app.command("gate")
def gate_cmd(
    audit_dir: Path = typer.Argument(..., help="Audit folder written by `lungaudit audit`."),
    policy: Optional[Path] = typer.Option(
        None, "--policy", help="YAML gate policy (default: the packaged policy, unless --max-*/--min-* limits are given; `lungaudit config --dump gate.yaml --policy` writes it for editing)."
    ),
    max_flag_rate: Optional[float] = typer.Option(None, "--max-flag-rate", help="Fail if the overall flag rate is above F."),
    min_mean_in_lung: Optional[float] = typer.Option(None, "--min-mean-in-lung", help="Fail if mean E_in is below F."),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy", help="Fail if accuracy is below F (fails on unlabeled audits)."),
    max_flip_rate: Optional[float] = typer.Option(None, "--max-flip-rate", help="Fail if the flip rate under masking is above F."),
    class_max_flag_rate: list[str] = typer.Option(
        [], "--class-max-flag-rate", help="CLASS=F: fail if that class's flag rate is above F (repeatable)."
    ),
    junit: Optional[Path] = typer.Option(None, "--junit", help="JUnit XML path (default: AUDIT_DIR/gate.junit.xml)."),
) -> None:
    """Pass/fail release gate on an audit: exit 0 all pass, 1 any condition fails, 2 malformed input."""
    try:
        given = any(v is not None for v in (max_flag_rate, min_mean_in_lung, min_accuracy, max_flip_rate)) or class_max_flag_rate
        pol = load_policy(policy if policy is not None else packaged_config("gate.yaml")) if policy or not given else GatePolicy()
        flags = {
            "max_flag_rate": max_flag_rate, "min_mean_in_lung": min_mean_in_lung,
            "min_accuracy": min_accuracy, "max_flip_rate": max_flip_rate,
        }
        cli = policy_from_dict({k: v for k, v in flags.items() if v is not None}, "command line")
        per_class: dict[str, dict[str, float]] = {}
        for item in class_max_flag_rate:
            cls, lim = parse_class_limit(item)
            per_class.setdefault(cls, {}).update(lim)
        pol = pol.merged(GatePolicy(overall=cli.overall, per_class=per_class))
        result = la.gate(audit_dir, pol, junit=junit)
    except (GateError, AuditDirError) as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write the gate results: {os_error(e)}")

    table = Table(title=f"gate: {audit_dir}", title_justify="left")
    for col in ("condition", "scope", "value", "limit", "result"):
        table.add_column(col, justify="right" if col in ("value", "limit") else "left")
    for r in result.results:
        c = r.condition
        # c.where and r.reason carry class/source names from the data: plain Text, never markup
        status = Text("pass", "green") if r.passed else Text.assemble(("FAIL", "bold red"), f" {r.reason}")
        table.add_row(c.name, c.where, _f(r.value), f"{c.op} {c.limit:g}", status)
    console.print(table)
    verdict = "[bold green]PASSED[/]" if result.passed else f"[bold red]FAILED[/] ({result.n_failed} of {len(result.results)})"
    say("gate " + verdict + "; wrote {} and {}", audit_dir / "gate.json", junit or audit_dir / "gate.junit.xml")
    raise typer.Exit(0 if result.passed else 1)


@app.command("compare")
def compare_cmd(
    baseline: Path = typer.Argument(..., help="Audit folder of the baseline model."),
    candidate: Path = typer.Argument(..., help="Audit folder of the candidate model (same data set)."),
    tolerance: float = typer.Option(0.02, "--tolerance", help="Allowed absolute worsening of any rate."),
    out: Optional[Path] = typer.Option(None, "--out", help="compare.json path (default: CANDIDATE/compare.json)."),
) -> None:
    """Compare two audits of the same data set; exit 1 when the candidate regresses beyond the tolerance."""
    try:
        result, path = compare_audits(baseline, candidate, tolerance, out)
    except (CompareError, AuditDirError) as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write compare.json: {os_error(e)}")

    # One row per scope, one column per statistic: "baseline → candidate (delta)".
    stats = ("flag_rate", "mean_e_in", "flip_rate", "accuracy")
    table = Table(title=f"compare (tolerance {tolerance:g}): baseline → candidate", title_justify="left")
    table.add_column("scope")
    for head in ("flag rate", "mean E_in", "flip rate", "accuracy"):
        table.add_column(head, justify="right")
    cells: dict[str, dict[str, Text]] = {}
    for r in result["rows"]:
        scope = "overall" if r["group"] is None else f"{r['scope']} {r['group']}"
        if r["note"]:
            text = Text(r["note"], "dim")
        else:
            style = "bold red" if r["regressed"] else ("green" if r["worse_by"] < -tolerance else "")
            text = Text(f"{_f(r['baseline'])} → {_f(r['candidate'])} ({r['delta']:+.3f})", style)
        cells.setdefault(scope, {})[r["metric"]] = text
    for scope, row in cells.items():
        table.add_row(scope, *(row.get(s, "") for s in stats))
    console.print(table)
    for change in result["config_changes"]:
        say("[yellow]note:[/] audit config differs: {}", change)
    if result["regressed"]:
        say("[bold red]candidate regressed[/] on {} statistic(s); wrote {}", result["n_regressions"], path)
        raise typer.Exit(1)
    say("[bold green]no regression[/] beyond {}; wrote {}", f"{tolerance:g}", path)


@app.command("apply-review")
def apply_review_cmd(
    decisions: Path = typer.Argument(..., help="decisions.csv exported from the HTML report."),
    dataset: Path = typer.Argument(..., help="The data set the audit ran on."),
    out: Path = typer.Option(..., "--out", help="Folder for the cleaned manifest.csv."),
    layout: str = typer.Option("auto", "--layout", help="Data set layout: auto | covid | folders | manifest."),
) -> None:
    """Apply review decisions (keep/exclude/relabel) and write a cleaned manifest.csv."""
    try:
        path, counts = la.apply_review(decisions, dataset, out, layout=layout)
    except ReviewError as e:
        fail(str(e))
    except ValueError as e:  # the loader's own errors: unreadable data set, bad layout
        fail(f"cannot load data set {dataset}: {e}")
    except OSError as e:
        fail(os_error(e))
    table = Table(title="review applied", title_justify="left")
    table.add_column("outcome")
    table.add_column("images", justify="right")
    table.add_row("kept (decided)", str(counts.kept))
    table.add_row("relabelled", str(counts.relabelled))
    table.add_row("excluded", str(counts.excluded))
    table.add_row("undecided (kept as-is)", str(counts.undecided))
    table.add_row("in cleaned manifest", str(counts.total_out), style="bold")
    console.print(table)
    console.print(f"wrote {path}", highlight=False)
