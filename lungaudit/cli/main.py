"""Entry point: importing the command modules registers their commands on ``app``."""

import logging

from lungaudit.cli import (  # noqa: F401  (registration)
    cmd_audit,
    cmd_config,
    cmd_data,
    cmd_explain,
    cmd_features,
    cmd_plant,
    cmd_predict,
    cmd_report,
    cmd_sanity,
    cmd_serve,
    cmd_synth,
    cmd_train,
)
from lungaudit.cli.app import app

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

__all__ = ["app"]

if __name__ == "__main__":
    app()
