"""``lungaudit audit``: per-prediction Grad-CAM lung-energy audit of a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lungaudit.cli.app import app
from lungaudit.cli.choices import enum_from
from lungaudit.cli.common import console, fail, is_main_process, os_error, say, table
from lungaudit.data.split import SPLITS

SplitChoice = enum_from(SPLITS, "SplitChoice")


def print_audit_summary(summary: Any) -> None:
    o, c = summary.overall, summary.counts
    console.print(table("Audit", ["", "value"], [
        ["images audited", c.audited], ["flagged", c.flagged], ["flag rate", o.flag_rate],
        ["mean E_in (strict)", o.mean_e_in], ["mean E_in (tolerant)", o.mean_e_in_tol],
        ["flip rate under masking", o.flip_rate], ["accuracy", o.accuracy], ["problem files", c.problems],
        ["images the run trained on", c.trained_on],
    ]))  # fmt: skip
    for title, block in (("Per class", summary.per_class), ("Per source", summary.per_source)):
        if block:
            console.print(table(title, ["group", "n", "flag rate", "mean E_in", "flip rate", "accuracy"],
                                [[k, v.n, v.flag_rate, v.mean_e_in, v.flip_rate, v.accuracy] for k, v in block.items()]))
    if summary.regions:
        console.print(table("Flagged: dominant outside region", ["region", "images"], sorted(summary.regions.items(), key=lambda kv: -kv[1])))
    if c.trained_on:
        say("[yellow]note:[/] {} of the audited images were in the run's training or validation split", c.trained_on)


def audit_ticker(progress: Progress) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback that adds an "audit" bar (with images/s) to ``progress``."""
    task = None

    def tick(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            task = progress.add_task("audit", total=total)
        elapsed = progress.tasks[task].elapsed
        rate = f" {done / elapsed:.1f} img/s" if elapsed else ""
        progress.update(task, completed=done, total=total, description=f"audit{rate}")

    return tick


def with_audit_progress(run: Callable[[Callable[[int, int], None]], Any], enabled: bool = True) -> Any:
    """Call ``run(tick)`` behind a rich progress bar showing images/s (none when not ``enabled``)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not enabled) as progress:
        return run(audit_ticker(progress))


@app.command()
def audit(
    dataset: Optional[Path] = typer.Argument(None, help="Data set folder or manifest CSV (default: the run's own data set)."),
    run: Optional[Path] = typer.Option(None, "--run", help="Training run folder (default: the latest under runs/train)."),
    name: str = typer.Option("exp", help="Audit name under runs/audit/."),
    split: Optional[SplitChoice] = typer.Option(None, help="Audit only this split, as the run split it."),  # type: ignore[valid-type]
    layout: Optional[str] = typer.Option(None, help="Data set layout (default: detect, or the run's)."),
    predict_masks: bool = typer.Option(False, "--predict-masks", help="Ignore given masks; use the run's U-Net."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a key of the run's config, e.g. --set audit.out_threshold=0.4."),
    project: Path = typer.Option(Path("runs"), "--project", help="Parent folder of train/ and audit/."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    workers: int = typer.Option(1, "--workers", min=0, help="Decode workers."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue runs/audit/<name> where it stopped (same run, config and data; a sharded audit with as many processes)."
    ),
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.html at the end."),
) -> None:
    """Audit every prediction: does the Grad-CAM energy sit in the lungs? The audit follows the run's data, split and config.

    Under torchrun each process audits a shard and rank 0 merges them into one folder and report.
    """
    import lungaudit as la

    overrides = list(set_ or []) + (["audit.predict_masks=true"] if predict_masks else [])
    main = is_main_process()
    try:
        result = with_audit_progress(lambda tick: la.audit(
            dataset, run, split=split.value if split else None, name=name, project=project, layout=layout,
            overrides=overrides, device=device, resume=resume, progress=tick, num_workers=workers,
        ), enabled=main)  # fmt: skip
    except ValueError as e:
        fail(str(e))
    except OSError as e:
        fail(os_error(e))
    if not main:
        return
    print_audit_summary(result.summary)
    say("throughput: {} images/s; outputs: [bold]{}[/]", f"{result.images_per_s:.1f}", result.out_dir)
    if report:
        say("report: [bold]{}[/]", la.report(result.out_dir))
