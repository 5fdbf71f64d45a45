"""Typer choices built from the project's registries and constants, never from copied lists."""

from __future__ import annotations

from enum import Enum
from typing import Iterable


def enum_from(names: Iterable[str], name: str) -> type[Enum]:
    """A ``str`` Enum whose members are ``names`` (Typer shows them as the option's choices)."""
    return Enum(name, {n: n for n in names}, type=str)  # type: ignore[return-value]


__all__ = ["enum_from"]
