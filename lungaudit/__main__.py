"""``python -m lungaudit``: the CLI, so ``torchrun ... -m lungaudit train`` runs this checkout's package."""

from lungaudit.cli.main import app

if __name__ == "__main__":
    app(prog_name="lungaudit")
