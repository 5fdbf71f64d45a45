"""``lungaudit train``: the segmenter, then the classifier, into runs/train/<name>."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lungaudit.cli.app import app
from lungaudit.cli.choices import enum_from
from lungaudit.cli.common import console, fail, fmt, is_main_process, load_cli_config, os_error, say, table
from lungaudit.config import replace
from lungaudit.training import STAGES
from lungaudit.training.callbacks import TrainCallback

StageChoice = enum_from(STAGES, "StageChoice")


class RichTrainProgress(TrainCallback):
    """One progress bar per stage, advanced per batch, with the last epoch's numbers in the label."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None
        self.steps = 1

    def stage_start(self, stage: str, start_epoch: int, epochs: int, steps_per_epoch: int) -> None:
        self.steps, self.total = steps_per_epoch, epochs * steps_per_epoch
        self.task = self.progress.add_task(
            f"{stage} epoch {start_epoch + 1}/{epochs}",
            total=self.total,
            completed=start_epoch * steps_per_epoch,
        )
        self.epochs = epochs

    def step(self, stage: str, epoch: int, step: int, loss: float) -> None:
        self.progress.update(self.task, completed=epoch * self.steps + step + 1,
                             description=f"{stage} epoch {epoch + 1}/{self.epochs} loss {loss:.3f}")

    def epoch_end(self, stage: str, row: dict[str, Any]) -> None:
        keys = ("val_dice_pp", "val_iou_pp") if stage == "seg" else ("val_auc", "val_auc_masked", "val_macro_f1", "val_acc")
        stats = "  ".join(f"{k[4:]} {fmt(row.get(k))}" for k in keys)
        self.progress.console.print(
            f"  {stage} epoch {row['epoch']}: loss {fmt(row['train_loss'])}  {stats}  ({row['epoch_time_s']:.1f}s)"
        )

    def stage_end(self, stage: str, summary: dict[str, Any]) -> None:
        self.progress.update(self.task, completed=self.total)

    def message(self, text: str) -> None:
        self.progress.console.print(text, style="dim", markup=False, highlight=False)


def print_test_metrics(tm: dict[str, Any]) -> None:
    seg = tm.get("segmentation")
    if seg:
        console.print(table("Segmentation (test)", ["metric", "raw", "post-processed"],
                            [["Dice", seg["dice"], seg["dice_pp"]], ["IoU", seg["iou"], seg["iou_pp"]]]))
    cls = tm.get("classification")
    if cls:
        views = [v for v in ("full", "masked", "twin") if v in cls]
        rows = [[m] + [cls[v][m] for v in views] for m in ("accuracy", "macro_f1", "macro_auc")]
        console.print(table("Classification (test)", ["metric"] + views, rows))
        per = cls["full"]["per_class"]
        console.print(table("Per class (test, full image)", ["class", "sensitivity", "specificity", "PPV", "NPV", "F1", "AUC"],
                            [[c, m["sensitivity"], m["specificity"], m["ppv"], m["npv"], m["f1"], m["auc"]] for c, m in per.items()]))
        if "shortcut_reliance_rate" in cls:
            console.print(f"shortcut reliance (prediction changes on the clean twin): {cls['shortcut_reliance_rate']:.3f}")


TRAIN_ERRORS = (ValueError, RuntimeError, OSError)  # CheckpointError, ConfigError, ImageReadError are ValueErrors


def _progress(enabled: bool = True) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, disable=not enabled)  # fmt: skip



@app.command()
def train(
    dataset: Optional[Path] = typer.Argument(None, help="Data set folder or manifest CSV (default: the synthetic benchmark)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (default: ./lungaudit.yaml, else the packaged defaults)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a config key, e.g. --set cls.mask_prob=0."),
    stage: StageChoice = typer.Option("all", help="all: segmenter then classifier | seg | cls"),  # type: ignore[valid-type]
    seg_from: Optional[Path] = typer.Option(None, "--seg-from", help="Reuse the U-Net of this run folder or checkpoint for missing masks (no segmenter is trained)."),
    name: Optional[str] = typer.Option(None, help="Run name under runs/train/ (default: config name)."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
    resume: bool = typer.Option(False, "--resume", help="Continue the named (or latest) run from its last checkpoints."),
    pretrained: bool = typer.Option(False, "--pretrained", help="Start from ImageNet weights (needs network)."),
    weights: Optional[Path] = typer.Option(
        None, "--weights", help="Start from local weights: a run folder, a lungaudit checkpoint or a state dict (offline)."
    ),
) -> None:
    """Train the lung segmenter and the masked/unmasked classifier."""
    from lungaudit.training.pipeline import train as run_train

    cfg = load_cli_config(config, set_)
    run_dir = None
    if resume:
        run_dir = _resume_dir(Path(cfg.project) / "train", name)
        cfg = load_cli_config(run_dir / "config.yaml", set_)
    if dataset is not None:
        cfg = replace(cfg, data=replace(cfg.data, root=str(dataset)))
    cfg = replace(cfg, name=name or cfg.name, device=device or cfg.device)
    if pretrained:
        cfg = replace(cfg, seg=replace(cfg.seg, pretrained=True), cls=replace(cfg.cls, pretrained=True))
    if weights is not None:
        cfg = _with_weights(cfg, weights, stage.value)
    main = is_main_process()
    with _progress(main) as progress:
        try:
            callback = RichTrainProgress(progress) if main else TrainCallback()
            result = run_train(cfg, stage=stage.value, resume=resume, run_dir=run_dir, callback=callback, seg_from=seg_from)
        except TRAIN_ERRORS as e:
            progress.stop()
            fail(os_error(e) if isinstance(e, OSError) else str(e))
    if not main:
        return
    print_test_metrics(result.test_metrics)
    times = ", ".join(f"{k} {v:.0f}s" for k, v in result.stage_times_s.items())
    say("[bold green]done[/] in {}s ({}); run folder: [bold]{}[/]", f"{result.elapsed_s:.0f}", times, result.run_dir)


def _with_weights(cfg: Any, weights: Path, stage: str) -> Any:
    from lungaudit.training.weights import WeightsError, weights_for_stage

    try:
        chosen = weights_for_stage(weights, stage)
    except WeightsError as e:
        fail(str(e))
    for kind, path in chosen.items():
        cfg = replace(cfg, **{kind: replace(getattr(cfg, kind), weights=path)})
    return cfg


def _resume_dir(project: Path, name: str | None) -> Path:
    """The run to resume: the named one, else the latest that has a checkpoint to resume from."""
    if name:
        path = project / name
        if not (path / "config.yaml").is_file():
            fail(f"cannot resume: {path} is not a run folder (no config.yaml)")
        return path
    runs = [p for p in project.glob("*") if (p / "config.yaml").is_file() and any((p / "weights").glob("*_last.pt"))]
    if not runs:
        fail(f"cannot resume: no run folder under {project} has a checkpoint to resume from")
    return max(runs, key=lambda p: p.stat().st_mtime)


@app.command()
def demo(
    out: Path = typer.Option(Path("data/synth"), help="Where to write the synthetic benchmark."),
    name: str = typer.Option("demo", help="Run name under runs/train/ and runs/audit/."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (default: ./lungaudit.yaml, else the packaged defaults)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a config key."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
) -> None:
    """The whole job on the embedded default: synth -> train -> audit (test split) -> report."""
    import lungaudit as la
    from lungaudit.cli.cmd_audit import audit_ticker, print_audit_summary

    cfg = load_cli_config(config, set_)
    with _progress() as progress:
        try:
            result = la.demo(out, name=name, cfg=cfg, device=device, callback=RichTrainProgress(progress), progress=audit_ticker(progress),
                             message=lambda m: progress.console.print(m, style="bold", markup=False, highlight=False))
        except TRAIN_ERRORS as e:
            progress.stop()
            fail(os_error(e) if isinstance(e, OSError) else str(e))
    print_test_metrics(result.train.test_metrics)
    print_audit_summary(result.audit.summary)
    say("report: [bold green]{}[/]", result.report)
