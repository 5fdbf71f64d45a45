"""``lungaudit plant``: burn label-correlated shortcuts into real radiographs, with clean test twins."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from lungaudit.api import plant
from lungaudit.cli.app import app
from lungaudit.cli.common import console, fail, say
from lungaudit.data.layouts import DatasetError
from lungaudit.data.plant import KIND_NAMES, PlantConfig, PlantResult
from lungaudit.data.records import Problem
from lungaudit.data.split import SPLITS

_DEFAULTS = PlantConfig()


MAX_SHOWN = 20  # a whole folder failing for one reason should not scroll the reason away


def _problems_table(problems: list[Problem]) -> None:
    if not problems:
        return
    t = Table(title=f"Skipped or questionable inputs ({len(problems)})", title_justify="left")
    t.add_column("path", overflow="fold")
    t.add_column("kind")
    t.add_column("reason", overflow="fold")
    ordered = sorted(problems, key=lambda p: (p.kind, str(p.path)))
    for p in ordered[:MAX_SHOWN]:
        t.add_row(Text(str(p.path)), Text(p.kind), Text(p.reason))
    console.print(t)
    if len(ordered) > MAX_SHOWN:
        reasons = Counter(p.reason for p in ordered[MAX_SHOWN:])
        top = "; ".join(f"{n}x {r}" for r, n in reasons.most_common(3))
        console.print(f"... and {len(ordered) - MAX_SHOWN} more ({top})")


def _summary(result: PlantResult) -> None:
    """Images per class and split, and how often the cue points at the image's own class."""
    t = Table(title=f"Planted data set in {result.out}", title_justify="left")  # the console prints plain text
    t.add_column("class")
    for sp in SPLITS:
        t.add_column(sp, justify="right")
    t.add_column("cue agrees (train+val / test)", justify="right")
    for label in result.class_names:
        rows = [r for r in result.rows if r["label"] == label]
        fit = [r for r in rows if r["split"] != "test" and r["shortcut"]]
        test = [r for r in rows if r["split"] == "test" and r["shortcut"]]
        agree = [sum(r["shortcut_class"] == label for r in rs) / max(len(rs), 1) for rs in (fit, test)]
        counts = Counter(r["split"] for r in rows)
        t.add_row(Text(label), *[str(counts[sp]) for sp in SPLITS], f"{agree[0]:.2f} / {agree[1]:.2f}")
    console.print(t)
    kinds = Counter(r["shortcut"] or "(none fitted)" for r in result.rows)
    console.print("cue kinds: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    console.print(f"manifest: {result.manifest}")


@app.command("plant")
def plant_cmd(
    real_dir: Path = typer.Argument(
        ..., help="Real radiographs with lung masks: images/ + masks/, a manifest CSV (path,label,mask), or <CLASS>/images + masks."
    ),
    out: Path = typer.Argument(..., help="Output folder: new, empty, or an earlier planted set to overwrite."),
    labels: Optional[Path] = typer.Option(  # noqa: UP007 - typer needs Optional on 3.10
        None, "--labels", help="CSV with a label per image: columns label and path (or stem)."
    ),
    suffix_labels: Optional[str] = typer.Option(  # noqa: UP007
        None, "--suffix-labels", help="Label from the file name's last _suffix, e.g. 0=Normal,1=TB (Shenzhen, Montgomery)."
    ),
    rate: float = typer.Option(_DEFAULTS.rate, help="P(the cue points at the image's own class) in train/val; test is independent."),
    seed: int = typer.Option(_DEFAULTS.seed, help="Random seed; output is byte-identical per seed."),
    val_frac: float = typer.Option(_DEFAULTS.val_frac, help="Validation fraction (stratified by label)."),
    test_frac: float = typer.Option(_DEFAULTS.test_frac, help="Test fraction; test images get clean twins."),
    kinds: str = typer.Option(",".join(_DEFAULTS.kinds), help=f"Comma list of cue kinds: {', '.join(KIND_NAMES)}."),
    margin_frac: float = typer.Option(_DEFAULTS.margin_frac, help="Keep-out band around the lungs, as a fraction of the side."),
) -> None:
    """Plant label-correlated shortcuts (text markers, rulers, bands, patches) on real anatomy, off the lungs."""
    cfg = PlantConfig(
        rate=rate, seed=seed, val_frac=val_frac, test_frac=test_frac,
        kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()), margin_frac=margin_frac,
    )  # fmt: skip
    columns = (TextColumn("plant"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("plant", total=None)
        try:
            result = plant(
                real_dir, out, cfg, labels=labels, suffix_labels=suffix_labels,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip
        except DatasetError as e:
            bar.stop()
            _problems_table(e.problems)
            fail(str(e))
        except (ValueError, OSError) as e:
            bar.stop()
            fail(str(e))
    _summary(result)
    _problems_table(result.problems)
    if result.problems:
        console.print(f"all {len(result.problems)} problem(s): {result.out / 'problems.csv'}")
    if result.unplaced:
        say("[yellow]{} image(s) had no room for a cue off the lungs and carry none[/]", result.unplaced)


__all__ = ["plant_cmd"]
