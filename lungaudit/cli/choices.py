"""Typer choices built from the project's registries, so a new layout, CAM method or split shows up
in ``--help`` and is accepted without editing a copied list."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum


def enum_from(names: Iterable[str], name: str) -> type[Enum]:
    """A ``str`` Enum named ``name`` with one member per name (member name = value = the name).

    Typer shows the values as the option's choices and passes the chosen member; its ``.value`` is
    the plain string. Use as ``LayoutChoice = enum_from(layout_names(), "LayoutChoice")``.
    Raises ``ValueError`` for no names or a repeated one, which would otherwise give a silently
    smaller choice list.
    """
    values = list(names)
    if not values:
        raise ValueError(f"{name}: no choices to build an Enum from")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{name}: repeated choice(s) {', '.join(repeated)}")
    return Enum(name, [(v, v) for v in values], type=str)  # type: ignore[return-value]


__all__ = ["enum_from"]
