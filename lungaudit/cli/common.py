"""Helpers shared by the CLI commands: console, config loading, clean exits, safe tables.

Every string that may come from data (a path, a class or source name, an error message quoting a
file) is printed as plain text, never parsed as rich markup: ``data/x[/y]`` is a valid folder name.
So both consoles are created with markup *off*: a ``console.print(f"...")`` or a table cell holding a
user string can never raise ``MarkupError`` or restyle the output. Styling is opt-in, through
:func:`say` (a trusted template whose slots are escaped) or ``rich.text.Text`` with explicit styles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from lungaudit.config import ConfigError, TrainConfig, load_config

console = Console(markup=False)
err_console = Console(stderr=True, markup=False)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: <message>`` (as plain text) on stderr and exit with ``code`` (2: bad input)."""
    # soft_wrap: a long path must stay one greppable line, not be broken at the terminal width.
    err_console.print(Text.assemble(("error: ", "bold red"), str(message)), soft_wrap=True)
    raise typer.Exit(code)


def os_error(e: OSError) -> str:
    """``<path>: <reason>`` for a failed read or write (an unwritable --out, a file where a folder should be)."""
    if e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e)


def is_main_process() -> bool:
    """False on the ranks other than 0 under torchrun: they work silently and print nothing."""
    from lungaudit.distributed import env_world

    try:
        return env_world().is_main
    except ValueError as e:
        fail(str(e))


def say(template: str, *values: Any) -> None:
    """Print ``template`` (trusted rich markup) with ``{}`` slots filled by escaped ``values``."""
    console.print(template.format(*(escape(str(v)) for v in values)), markup=True, highlight=False, soft_wrap=True)


def load_cli_config(config: Path | None, overrides: list[str] | None) -> TrainConfig:
    """``--config`` (else ./lungaudit.yaml, else the packaged defaults) plus ``--set`` overrides; exit 2 on error."""
    try:
        return load_config(config, overrides or [])
    except ConfigError as e:
        fail(str(e))


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.{digits}f}"
    return str(v)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    """A rich table whose title, headers and cells are plain text (never markup)."""
    t = Table(title=Text(title), title_justify="left")
    for c in columns:
        t.add_column(Text(c), justify="left" if c == columns[0] else "right")
    for r in rows:
        t.add_row(*[Text(fmt(v)) for v in r])
    return t
