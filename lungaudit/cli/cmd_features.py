"""``lungaudit features``: embeddings, filters, most/least activating images and the source-leakage probe."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lungaudit.cli.app import app
from lungaudit.cli.cmd_explain import print_problems, run_study
from lungaudit.cli.common import console, say, table


@app.command()
def features(
    dataset: Optional[Path] = typer.Argument(None, help="Data set folder or manifest CSV (default: the run's own data set)."),
    run: Optional[Path] = typer.Option(None, "--run", help="Training run folder (default: the latest under runs/train)."),
    split: Optional[str] = typer.Option(None, help="train | val | test | all (default: test of the run's data; all of a given data set)."),
    layout: Optional[str] = typer.Option(None, help="Data set layout (default: detect, or the run's)."),
    k: int = typer.Option(5, "-k", min=1, help="Most and least activating images shown per class."),
    kernel_pca: bool = typer.Option(False, "--kernel-pca", help="Also embed with RBF kernel PCA."),
    no_tsne: bool = typer.Option(False, "--no-tsne", help="PCA only (t-SNE takes a while on thousands of images)."),
    max_images: Optional[int] = typer.Option(None, "--max-images", min=3, help="Study at most this many images (spread over the classes)."),
    name: str = typer.Option("exp", help="Output name under runs/features/."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (e.g. <audit folder>/features, for the report to link)."),
    project: Path = typer.Option(Path("runs"), "--project", help="Parent folder of train/ and features/."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
) -> None:
    """What the classifier's features encode, full vs lung-masked: embeddings by class and source, and the source-leakage probe."""
    import lungaudit as la

    embeddings = ["pca"] + ([] if no_tsne else ["tsne"]) + (["kpca"] if kernel_pca else [])
    result = run_study(lambda: la.features(dataset, run, split=split, layout=layout, k=k, embeddings=embeddings,
                                           max_images=max_images, name=name, out_dir=out, project=project, device=device))  # fmt: skip
    print_problems(result.problems)
    full, masked = result.probe["full"], result.probe["masked"]
    if full.get("available"):
        rows = [[k_, full[key], masked.get(key)] for k_, key in (("accuracy", "accuracy"), ("balanced accuracy", "balanced_accuracy"),
                                                                ("chance", "chance"), ("above chance", "lift"))]  # fmt: skip
        title = f"Source-leakage probe ({full['n_samples']} images, {full['n_splits']}-fold)"
        console.print(table(title, ["", "full image", "lung-masked"], rows))
    else:
        say("[yellow]no leakage probe:[/] {}", full.get("reason"))
    from lungaudit.studies.features import interpret

    say("{}", interpret(result.probe))
    say("{} images; figures, CSVs and features.html: [bold]{}[/]", result.n_images, result.out_dir)
