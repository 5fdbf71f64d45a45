"""A plain name -> builder registry used for model builders, CAM methods and data set layouts.

Decorator registration keeps each builder next to its code; the CLI's choices and the
parametrised tests both read ``names()``, so a new entry is exposed and tested without edits elsewhere.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(fn: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._items[name] = fn
            return fn

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; valid: {', '.join(sorted(self._items))}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """Every ``(name, entry)``, sorted by name like :meth:`names`. An entry that must be tried in
        a particular order (a layout's detection priority) carries that order itself, so the result
        never depends on which module happened to be imported first."""
        return [(name, self._items[name]) for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._items
