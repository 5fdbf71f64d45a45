"""The Typer application object; command modules attach to it."""

import typer

app = typer.Typer(
    name="lungaudit",
    help="Catch chest X-ray classifiers that read shortcuts instead of lungs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
