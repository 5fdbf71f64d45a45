"""``lungaudit inspect``: what a data set holds and which files are unusable, before any training."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

import lungaudit.api as la
from lungaudit.cli.app import app
from lungaudit.cli.choices import enum_from
from lungaudit.cli.common import console, fail, say
from lungaudit.data.layouts import AUTO, DatasetError, Inspection, layout_names, write_problems_csv
from lungaudit.data.split import SPLITS
from lungaudit.utils import safe_filename

LayoutChoice = enum_from(layout_names(), "LayoutChoice")


def _problems_target(dataset: Path, explicit: Path | None) -> Path:
    """``--problems-csv`` if given, else ``runs/inspect/<data set name>/problems.csv``.

    Never inside the data set itself: curators' folders may be read-only or shared, and a stray
    CSV there would be one more file for the next loader to skip.
    """
    if explicit is not None:
        return explicit
    # safe_filename: a manifest called "...csv" has the stem "..", which must not climb out of runs/inspect
    name = safe_filename(dataset.stem if dataset.suffix.lower() == ".csv" else dataset.resolve().name)
    return Path("runs") / "inspect" / name / "problems.csv"


def _render(ins: Inspection) -> None:
    ds = ins.dataset
    say("[bold]{}[/]  layout [cyan]{}[/]  {} usable image(s)", ds.root, ds.layout, len(ds.samples))

    splits = list(SPLITS) + (["-"] if any(s.split is None for s in ds.samples) else [])
    t = Table(title="Images per class and split", title_justify="left")
    t.add_column("class")
    for sp in splits:
        t.add_column(sp, justify="right")
    t.add_column("total", justify="right", style="bold")
    totals = dict.fromkeys(splits, 0)
    for label, row in ins.by_class_split.items():
        for sp in splits:
            totals[sp] += row.get(sp, 0)
        t.add_row(label, *[str(row.get(sp, 0)) for sp in splits], str(sum(row.values())))
    t.add_row("all", *[str(totals[sp]) for sp in splits], str(sum(totals.values())), style="bold")
    console.print(t)

    t = Table(title="Images per source", title_justify="left")
    t.add_column("source")
    t.add_column("images", justify="right")
    for src, n in ins.by_source.items():
        t.add_row(src, str(n))
    console.print(t)

    t = Table(title="Masks and image sizes", title_justify="left")
    t.add_column("item")
    t.add_column("value", justify="right")
    t.add_row("masks present", str(ins.masks_present))
    t.add_row("masks missing or unusable", str(ins.masks_missing))
    lo, hi = ins.stats.min_hw, ins.stats.max_hw
    if lo and hi:
        t.add_row("height (min-max)", f"{lo[0]}-{hi[0]}")
        t.add_row("width (min-max)", f"{lo[1]}-{hi[1]}")
        t.add_row("distinct sizes", str(len(ins.stats.sizes)))
    console.print(t)
    _render_problems(ds.problems, ds.root)


def _rel(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)


def _render_problems(problems: list, root: Path | None = None) -> None:
    if not problems:
        say("[green]No problem files.[/]")
        return
    title = f"Problem files ({len(problems)})" + (f" under {root}" if root is not None else "")
    t = Table(title=title, title_justify="left")
    t.add_column("path", overflow="fold")
    t.add_column("kind")
    t.add_column("reason", overflow="fold")
    for p in sorted(problems, key=lambda p: (p.kind, str(p.path))):
        t.add_row(_rel(p.path, root), p.kind, p.reason)
    console.print(t)


@app.command()
def inspect(
    dataset: Path = typer.Argument(..., help="Data set folder, or a manifest .csv."),
    layout: LayoutChoice = typer.Option(LayoutChoice(AUTO), "--layout", help="On-disk layout; auto detects it."),  # type: ignore[valid-type]
    problems_csv: Optional[Path] = typer.Option(  # noqa: UP007 - typer needs Optional on 3.10
        None, "--problems-csv", help="Where to write problems.csv (default: runs/inspect/<data set>/problems.csv)."
    ),
) -> None:
    """Count a data set by class, split and source, and list every unusable file with its reason."""
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("validating images", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            ins = la.inspect(dataset, layout=layout.value, progress=progress)
        except DatasetError as e:
            bar.stop()
            if e.problems:
                target = _problems_target(dataset, problems_csv)
                try:
                    write_problems_csv(e.problems, target)
                    _render_problems(e.problems)
                    console.print(f"problems written to {target}")
                except OSError:
                    pass
            fail(str(e))
    _render(ins)
    target = _problems_target(dataset, problems_csv)
    try:
        write_problems_csv(ins.dataset.problems, target)
    except OSError as e:
        fail(f"cannot write {target}: {e}")
    console.print(f"{len(ins.dataset.problems)} problem file(s); written to {target}")


__all__ = ["inspect"]
