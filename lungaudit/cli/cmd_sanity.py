"""``lungaudit sanity RUN``: Adebayo et al.'s randomisation tests for each explanation method, with verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from lungaudit.cli.app import app
from lungaudit.cli.cmd_explain import parse_options, print_problems, run_study
from lungaudit.cli.common import console, say, table


def sanity_rows(methods: dict[str, dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for m, r in methods.items():
        mr, dr = r["model_randomization"], r["data_randomization"]
        rows.append([m, r["kind"], mr["spearman"], dr["spearman"], dr["ssim"], mr["verdict"], dr["verdict"], r["verdict"].upper()])
    return rows


@app.command()
def sanity(
    run: Optional[Path] = typer.Argument(None, help="Training run folder (default: the latest under runs/train)."),
    methods: str = typer.Option("all", "--methods", "-m", help="Comma list of methods (see lungaudit explain --list), or all."),
    n_images: int = typer.Option(16, "--images", "-n", min=1, help="Images of the run's split to test on."),
    split: str = typer.Option("test", help="The run's split to draw the images from."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="A method's option, e.g. -o lime.n_samples=64."),
    threshold: float = typer.Option(0.5, help="A method fails when its maps correlate above this with a randomised model's."),
    random_epochs: int = typer.Option(3, "--random-epochs", min=1, help="Epochs of the permuted-label classifier."),
    random_model: Optional[Path] = typer.Option(None, "--random-model", help="Reuse an earlier sanity folder's permuted-label model."),
    seed: int = typer.Option(0, help="Seeds the image choice, the re-initialisation and the label permutation."),
    name: str = typer.Option("exp", help="Output name under runs/sanity/."),
    project: Path = typer.Option(Path("runs"), "--project", help="Parent folder of train/ and sanity/."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
) -> None:
    """Model- and data-randomisation sanity checks per method: sanity.json, sanity.png and a pass/fail table."""
    import lungaudit as la
    from lungaudit.cli.cmd_train import RichTrainProgress, _progress

    def call():  # noqa: ANN202
        with _progress() as progress:
            return la.sanity(run, methods=methods, n_images=n_images, split=split, options=parse_options(option),
                             threshold=threshold, random_epochs=random_epochs, random_model=random_model, seed=seed,
                             name=name, project=project, device=device, callback=RichTrainProgress(progress),
                             message=lambda m: progress.console.print(m, style="dim", markup=False, highlight=False))  # fmt: skip

    result = run_study(call, (ValueError, RuntimeError))
    print_problems(result.problems)
    title = f"Sanity checks on {result.n_images} image(s): Spearman with a randomised model (fail above {threshold:g})"
    console.print(table(title, ["method", "kind", "ρ all layers random", "ρ random labels", "SSIM random labels",
                                "model test", "data test", "verdict"], sanity_rows(result.methods)))  # fmt: skip
    if result.failing:
        say("[yellow]failing:[/] {} (their maps change little when the model or the labels are randomised)", ", ".join(result.failing))
    say("sanity.json, sanity.png, sanity_maps.png: [bold]{}[/]", result.out_dir)
