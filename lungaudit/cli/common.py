"""Helpers shared by the CLI commands: console, config loading, clean exits."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from lungaudit.config import ConfigError, TrainConfig, default_config_path, load_config

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def load_cli_config(config: Path | None, overrides: list[str] | None) -> TrainConfig:
    try:
        return load_config(config or default_config_path(), overrides or [])
    except ConfigError as e:
        fail(str(e))


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.{digits}f}"
    return str(v)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, justify="left" if c == columns[0] else "right")
    for r in rows:
        t.add_row(*[fmt(v) for v in r])
    return t
