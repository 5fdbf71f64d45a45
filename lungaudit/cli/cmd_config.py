"""``lungaudit config``: show or write the configuration, so defaults can be edited outside the package."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lungaudit.cli.app import app
from lungaudit.cli.common import console, fail, load_cli_config, say
from lungaudit.config import USER_CONFIG, find_config, packaged_config
from lungaudit.utils import atomic_write_text


@app.command("config")
def config_cmd(
    dump: Optional[Path] = typer.Option(None, "--dump", help=f"Write the commented default config to this file (e.g. {USER_CONFIG})."),
    policy: bool = typer.Option(False, "--policy", help="With --dump: write the default gate policy instead."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=f"Config to resolve (default: ./{USER_CONFIG}, else the packaged defaults)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a key, e.g. --set cls.epochs=20."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file with --dump."),
) -> None:
    """Print the resolved configuration, or --dump the packaged defaults for editing."""
    if dump is not None:
        source = packaged_config("gate.yaml" if policy else "default.yaml")
        if dump.exists() and not force:
            fail(f"{dump} exists; pass --force to overwrite it")
        try:
            atomic_write_text(dump, source.read_text(encoding="utf-8"))
        except OSError as e:
            fail(f"cannot write {dump}: {e.strerror or e}")
        say("wrote {} (from {})", dump, source)
        return
    cfg = load_cli_config(config, set_)
    import yaml

    from lungaudit.config import to_dict

    say("[dim]# resolved from {}[/]", find_config(config))
    console.print(yaml.safe_dump(to_dict(cfg), sort_keys=False), markup=False, highlight=False)
