"""``lungaudit explain``: several explanation methods side by side for chosen images, with their lung energy.

Method names are checked against the registry when the command runs (importing it at start-up would
load torch for every ``lungaudit --help``); ``--list`` prints the registry with each method's kind,
cost, audit floor and recorded sanity verdict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar

import typer
from rich.text import Text

from lungaudit.cli.app import app
from lungaudit.cli.common import console, err_console, fail, say, table

T = TypeVar("T")

DEFAULT_METHODS = "gradcam,guided_gradcam,integrated_gradients,occlusion"


def print_methods() -> None:
    """The registry: name, kind, cost, the floor ``audit.cam_floor: auto`` gives it, its sanity verdict."""
    from lungaudit.audit.step import resolve_floor
    from lungaudit.explain.cam import CAM_METHODS, method_info, method_options

    rows = []
    for name in CAM_METHODS.names():
        info = method_info(name)
        opts = ", ".join(method_options(name)) or "-"
        rows.append([name, info.kind, f"{info.forwards:g}", resolve_floor("auto", name), info.sanity or "not measured", opts])
    columns = ["method", "kind", "forwards/image", "floor (auto)", "sanity", "options"]
    console.print(table("Explanation methods (audit.cam / --methods)", columns, rows))
    notes = [(n, method_info(n).sanity_note) for n in CAM_METHODS.names() if method_info(n).sanity_note]
    for name, note in notes:
        say("[dim]{}: {}[/]", name, note)
    if not notes:
        say("[dim]no sanity verdict recorded yet: run lungaudit sanity RUN[/]")


def print_problems(problems: Sequence[Any], what: str = "skipped") -> None:
    for p in problems:
        # Text, not markup: err_console prints plain text, and a file name may hold brackets.
        err_console.print(Text.assemble((f"{what}: ", "yellow"), f"{p.path}: {p.reason}"), highlight=False, soft_wrap=True)


def run_study(call: Callable[[], T], errors: tuple[type[Exception], ...] = (ValueError,)) -> T:
    """``call()`` of a study (explain, sanity, features); bad input exits 2 naming it, with the refused files."""
    from lungaudit.studies.common import StudyInputError

    try:
        return call()
    except StudyInputError as e:
        print_problems(e.problems, "refused")
        fail(str(e))
    except errors as e:
        fail(str(e))


def parse_options(items: Optional[list[str]]) -> dict[str, dict[str, Any]]:
    from lungaudit.studies.common import parse_option

    try:
        return parse_option(items or [])
    except ValueError as e:
        fail(str(e))


@app.command()
def explain(
    images: Optional[list[Path]] = typer.Argument(None, help="Image files, folders or data sets (folder or manifest CSV)."),
    run: Optional[Path] = typer.Option(None, "--run", help="Training run folder (default: the latest under runs/train)."),
    methods: str = typer.Option(DEFAULT_METHODS, "--methods", "-m", help="Comma list of methods (see --list; ig: integrated_gradients)."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="A method's option, e.g. -o integrated_gradients.n_steps=16."),
    target: Optional[str] = typer.Option(None, "--target", help="Explain this class for every image (default: the predicted class)."),
    name: str = typer.Option("exp", help="Output name under runs/explain/."),
    project: Path = typer.Option(Path("runs"), "--project", help="Parent folder of train/ and explain/."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a key of the run's config, e.g. --set audit.cam_score=logit."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    list_methods: bool = typer.Option(False, "--list", help="List the methods (kind, cost, floor, sanity verdict) and exit."),
) -> None:
    """Explain images with several methods side by side: one panel PNG per image (E_in per method) and explain.json."""
    if list_methods:
        print_methods()
        return
    if not images:
        fail("give at least one image, folder or data set to explain (or --list)")
    import lungaudit as la

    result = run_study(lambda: la.explain(images, run, methods=methods, options=parse_options(option), target=target,
                                          name=name, project=project, overrides=set_ or [], device=device))  # fmt: skip
    print_problems(result.problems)
    names = list(result.images[0]["methods"]) if result.images else []
    rows = [[Path(r["path"]).name, r["pred"], *[_e_in(r["methods"][m]) for m in names]] for r in result.images]
    console.print(table(f"E_in per method ({len(result.images)} image(s))", ["image", "pred", *names], rows))
    say("panels and explain.json: [bold]{}[/]", result.out_dir)


def _e_in(e: dict[str, Any]) -> Any:
    return "no evidence" if e["no_evidence"] else e["e_in"]
