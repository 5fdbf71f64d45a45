"""``lungaudit synth``: write the synthetic phantom benchmark."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lungaudit.cli.app import app
from lungaudit.cli.common import console, fail, os_error
from lungaudit.config import CLASS_NAMES, SynthConfig
from lungaudit.data.split import SPLITS

_DEFAULTS = SynthConfig()


def _parse_shortcuts(text: str) -> tuple[str, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    return tuple(k.strip() for k in text.split(",") if k.strip())


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Output folder (COVID-19 Radiography Database layout)."),
    n_per_class: int = typer.Option(_DEFAULTS.n_per_class, help="Images per class, all splits together."),
    size: int = typer.Option(_DEFAULTS.size, help="Image side in pixels."),
    seed: int = typer.Option(_DEFAULTS.seed, help="Random seed; output is byte-identical per seed."),
    shortcut_rate: float = typer.Option(_DEFAULTS.shortcut_rate, help="P(shortcut matches class) in train/val."),
    shortcuts: str = typer.Option(
        ",".join(_DEFAULTS.shortcuts), help="Comma list of markers,shoulders,source (or 'none')."
    ),
    workers: int = typer.Option(_DEFAULTS.workers, help="Worker processes (0 = one per CPU core)."),
    severity_min: float = typer.Option(_DEFAULTS.severity_min, help="Lowest disease severity (0..1); low = some cases nearly invisible."),
    marker_vocab: str = typer.Option(_DEFAULTS.marker_vocab, help="corner: each corner has its own stamp words | shared: only the corner is a cue."),
    marker_plate: bool = typer.Option(_DEFAULTS.marker_plate, help="Burn stamps onto a dark box."),
) -> None:
    """Generate synthetic chest X-ray phantoms with lung masks, planted shortcuts and clean twins."""
    import lungaudit.api as la
    from lungaudit.data.synth import validate

    cfg = SynthConfig(
        n_per_class=n_per_class,
        size=size,
        seed=seed,
        shortcut_rate=shortcut_rate,
        shortcuts=_parse_shortcuts(shortcuts),
        workers=workers,
        val_frac=_DEFAULTS.val_frac,
        test_frac=_DEFAULTS.test_frac,
        n_sources=_DEFAULTS.n_sources,
        severity_min=severity_min,
        marker_vocab=marker_vocab,
        marker_plate=marker_plate,
    )
    try:
        validate(cfg)
    except ValueError as e:
        fail(str(e))

    columns = (TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("synth", total=len(CLASS_NAMES) * cfg.n_per_class)
        try:
            manifest = la.synth(out, cfg, progress=lambda done, total: bar.update(task, completed=done)) / "manifest.csv"
        except OSError as e:
            bar.stop()
            fail(f"cannot write the synthetic data set: {os_error(e)}")

    with open(manifest, newline="") as f:
        counts = Counter((r["label"], r["split"]) for r in csv.DictReader(f))
    table = Table(title=f"Synthetic data in {out}")
    table.add_column("class")
    for sp in SPLITS:
        table.add_column(sp, justify="right")
    table.add_column("total", justify="right")
    for label in CLASS_NAMES:
        row = [counts[(label, sp)] for sp in SPLITS]
        table.add_row(label, *map(str, row), str(sum(row)))
    totals = [sum(counts[(c, sp)] for c in CLASS_NAMES) for sp in SPLITS]
    table.add_row("all", *map(str, totals), str(sum(totals)), style="bold")
    console.print(table)
    console.print(f"manifest: {manifest}")
