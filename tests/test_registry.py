"""The name -> entry registry behind model builders, CAM methods and data set layouts."""

from __future__ import annotations

import pytest

from lungaudit.registry import Registry


def test_items_are_sorted_by_name_whatever_the_registration_order() -> None:
    reg: Registry = Registry("thing")
    for name in ("zeta", "alpha", "mid"):
        reg.register(name)(lambda name=name: name)
    assert [name for name, _ in reg.items()] == reg.names() == ["alpha", "mid", "zeta"]
    assert all(entry is reg.get(name) for name, entry in reg.items())


def test_unknown_and_repeated_names_are_clear() -> None:
    reg: Registry = Registry("thing")
    reg.register("a")(len)
    with pytest.raises(KeyError, match="unknown thing 'b'; valid: a"):
        reg.get("b")
    with pytest.raises(KeyError, match="already registered"):
        reg.register("a")(len)
