"""``lungaudit predict``: single images through a run, each prediction audited; a table or JSON/CSV.

Exit codes: 0 when at least one image was predicted (unreadable files are listed with their reason,
on stderr with ``--json``/``--csv``, and in the JSON's ``problems``); 2 when nothing could be
predicted (no image found, every file unreadable, a bad run or config), or with ``--strict`` when
any file was unreadable. A flagged prediction is not an error: gate releases with ``lungaudit gate``.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from lungaudit.cli.app import app
from lungaudit.cli.common import console, err_console, fail, say, table


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def print_predictions(result: Any) -> None:
    """Two tables: the audited prediction per image, then every class probability."""
    rows = []
    for p in result.predictions:
        r = p.row
        verdict = p.verdict + (f" ({r.region})" if r.region and p.verdict == "out-of-lung" else "")
        rows.append([r.key, f"{r.pred} {_pct(r.prob_pred)}", r.pred_masked + (" (flip)" if r.flip else ""),
                     _pct(r.e_in), _pct(r.e_out), verdict, ", ".join(r.reasons) if r.flagged else "—"])  # fmt: skip
    console.print(table("Predictions", ["image", "prediction", "lungs only", "E_in", "E_out", "evidence", "flagged"], rows))
    names = result.class_names
    probs = [[p.row.key, *[p.row.probs.get(c) for c in names]] for p in result.predictions]
    console.print(table("Class probabilities", ["image", *names], probs))
    if any(p.row.trained_on for p in result.predictions):
        n = sum(p.row.trained_on for p in result.predictions)
        say("[yellow]note:[/] {} of these images were in the run's training or validation split", n)


def print_problems(problems: list[Any], to_stderr: bool) -> None:
    if not problems:
        return
    t = Table(title=f"Could not predict ({len(problems)})", title_justify="left")
    t.add_column("file", overflow="fold")
    t.add_column("reason", overflow="fold")
    for p in problems:
        t.add_row(Text(str(p.path)), Text(p.reason))  # plain text: paths and reasons are not markup
    (err_console if to_stderr else console).print(t)


def predictions_csv(result: Any) -> str:
    from lungaudit.services.predict import predict_csv_columns

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=predict_csv_columns(result.class_names), lineterminator="\n")
    w.writeheader()
    for p in result.predictions:
        w.writerow(p.to_csv(result.class_names))
    return buf.getvalue()


@app.command()
def predict(
    images: list[Path] = typer.Argument(..., help="Image files (PNG, JPEG, BMP, TIFF, DICOM) or folders of them."),
    run: Optional[Path] = typer.Option(None, "--run", help="Training run folder (default: the latest under runs/train)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON (predictions and problems) instead of tables."),
    csv_out: bool = typer.Option(False, "--csv", help="Print CSV (audit.csv's columns plus verdict) instead of tables."),
    overlays: Optional[Path] = typer.Option(None, "--overlays", help="Write one overlay PNG per image into this folder."),
    strict: bool = typer.Option(False, "--strict", help="Exit 2 when any file could not be predicted."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a key of the run's config, e.g. --set audit.out_threshold=0.4."),
    project: Path = typer.Option(Path("runs"), "--project", help="Parent folder of train/."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images per batch (default: the run's audit.batch_size)."),
) -> None:
    """Predict single images with a run; each prediction is audited: is its evidence in the lungs?"""
    import lungaudit as la

    if json_out and csv_out:
        fail("choose one of --json and --csv")
    try:
        result = la.predict(images, run, project=project, overrides=list(set_ or []), device=device, overlays=overlays, batch_size=batch_size)
    except (ValueError, OSError) as e:  # CheckpointError, ConfigError are ValueErrors; OSError: an unwritable --overlays
        fail(str(e))
    machine = json_out or csv_out
    if json_out:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    elif csv_out:
        sys.stdout.write(predictions_csv(result))
    elif result.predictions:
        print_predictions(result)
    print_problems(result.problems, to_stderr=machine)
    if not machine and overlays is not None and result.predictions:
        say("overlays: [bold]{}[/]", overlays)
    if not result.predictions:
        fail("no image could be predicted" + (f" ({len(result.problems)} file(s) unreadable)" if result.problems else ""))
    if strict and result.problems:
        fail(f"{len(result.problems)} file(s) could not be predicted (--strict)")


__all__ = ["predict", "predictions_csv", "print_predictions"]
