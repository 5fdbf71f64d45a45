"""``lungaudit audit``: per-prediction Grad-CAM lung-energy audit of a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lungaudit.cli.app import app
from lungaudit.cli.common import console, fail, load_cli_config, table
from lungaudit.config import replace


def latest_run(project: Path) -> Path:
    runs = sorted((p for p in (project / "train").glob("*") if (p / "weights" / "cls_best.pt").is_file()),
                  key=lambda p: p.stat().st_mtime)
    if not runs:
        fail(f"no trained run under {project / 'train'}; run `lungaudit train` first or pass --run")
    return runs[-1]


def print_audit_summary(summary: dict[str, Any]) -> None:
    o, c = summary["overall"], summary["counts"]
    console.print(table("Audit", ["", "value"], [
        ["images audited", c["audited"]], ["flagged", c["flagged"]], ["flag rate", o["flag_rate"]],
        ["mean E_in (strict)", o["mean_e_in"]], ["mean E_in (tolerant)", o["mean_e_in_tol"]],
        ["flip rate under masking", o["flip_rate"]], ["accuracy", o["accuracy"]], ["problem files", c["problems"]],
    ]))
    for title, block in (("Per class", summary["per_class"]), ("Per source", summary["per_source"])):
        if block:
            console.print(table(title, ["group", "n", "flag rate", "mean E_in", "flip rate", "accuracy"],
                                [[k, v["n"], v["flag_rate"], v["mean_e_in"], v["flip_rate"], v["accuracy"]] for k, v in block.items()]))
    if summary["regions"]:
        console.print(table("Flagged: dominant outside region", ["region", "images"], sorted(summary["regions"].items(), key=lambda kv: -kv[1])))


def audit_with_progress(ds: Any, run_dir: Path, out_dir: Path, cfg: Any, device: str, resume: bool = False) -> Any:
    """Run the audit behind a rich progress bar that shows images/s; clean exit 2 on bad input."""
    from lungaudit.audit.run import audit as run_audit
    from lungaudit.training.checkpoint import CheckpointError

    with Progress(TextColumn("audit"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("audit", total=len(ds.samples), rate="")

        def tick(done: int, total: int) -> None:
            elapsed = progress.tasks[0].elapsed
            progress.update(task, completed=done, total=total, rate=f"{done / elapsed:.1f} img/s" if elapsed else "")

        try:
            return run_audit(ds, run_dir, out_dir, cfg, device=device, resume=resume, progress=tick)
        except (ValueError, CheckpointError) as e:
            progress.stop()
            fail(str(e))


@app.command()
def audit(
    dataset: Path = typer.Argument(..., help="Data set folder or manifest CSV to audit."),
    run: Optional[Path] = typer.Option(None, "--run", help="Training run folder (default: the latest under runs/train)."),
    name: str = typer.Option("exp", help="Audit name under runs/audit/."),
    split: Optional[str] = typer.Option(None, help="Audit only this split (train | val | test)."),
    layout: str = typer.Option("auto", help="auto | covid | folders | manifest | segonly"),
    predict_masks: bool = typer.Option(False, "--predict-masks", help="Ignore given masks; use the run's U-Net."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (default: configs/default.yaml)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a config key, e.g. --set audit.out_threshold=0.4."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    resume: bool = typer.Option(False, "--resume", help="Continue runs/audit/<name> where it stopped."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.html at the end."),
) -> None:
    """Audit every prediction: does the Grad-CAM energy sit in the lungs?"""
    from lungaudit.data.layouts import DatasetError, load_dataset
    from lungaudit.training.rundir import increment_run_dir

    cfg = load_cli_config(config, set_)
    acfg = replace(cfg.audit, predict_masks=predict_masks or cfg.audit.predict_masks)
    run_dir = run or latest_run(Path(cfg.project))
    out_dir = increment_run_dir(Path(cfg.project) / "audit", name, exist_ok=resume)
    try:
        ds = load_dataset(dataset, layout, data_cfg=cfg.data)
    except (DatasetError, ValueError) as e:
        fail(str(e))
    if split:
        ds.samples = ds.split(split)
        if not ds.samples:
            fail(f"{dataset} has no images in split {split!r}")
    console.print(f"auditing {len(ds.samples)} images of {dataset} with {run_dir} -> {out_dir}")
    result = audit_with_progress(ds, run_dir, out_dir, acfg, device=device, resume=resume)
    print_audit_summary(result.summary)
    console.print(f"throughput: {result.images_per_s:.1f} images/s; outputs: [bold]{out_dir}[/]")
    if report:
        from lungaudit.report.html import write_report

        console.print(f"report: [bold]{write_report(out_dir)}[/]")
