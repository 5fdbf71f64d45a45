"""The Typer application object; command modules attach to it."""

from typing import Optional

import typer

from lungaudit import __version__

app = typer.Typer(
    name="lungaudit",
    help="Catch chest X-ray classifiers that read shortcuts instead of lungs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lungaudit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Catch chest X-ray classifiers that read shortcuts instead of lungs."""
