"""Read-only arrays whose rows are produced on access: a split on disk that looks like one in memory.

A :class:`RowView` of shape (N, S, S) answers ``len``, ``shape``, and indexing by an int, a slice or
an index array with ordinary in-memory numpy arrays of just those rows, so the training code that
slices batches out of decoded splits runs unchanged on a memory-mapped cache. Whole-split operations
(dilating every mask, masking every image) become lazy views (:meth:`RowView.map`,
:func:`zip_rows`) instead of copies, which is what keeps memory flat on sets larger than RAM.

Every piece is a small picklable object (no lambdas), so a view also crosses to DataLoader workers
started with ``spawn``; a memory map is reopened on the other side, never copied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np


class RowView:
    """An (N, *row_shape) array read a few rows at a time through ``source(indices) -> rows``."""

    def __init__(self, n: int, row_shape: tuple[int, ...], dtype: Any, source: Callable[[np.ndarray], np.ndarray]) -> None:
        self.n, self.row_shape, self.dtype, self.source = int(n), tuple(row_shape), np.dtype(dtype), source

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, *self.row_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):  # rows first, then the rest on the (small) result
            return self[key[0]][(slice(None), *key[1:])]
        if isinstance(key, (int, np.integer)):
            i = int(key) + self.n if key < 0 else int(key)
            if not 0 <= i < self.n:
                raise IndexError(f"row {key} out of range for {self.n} rows")
            return self.source(np.array([i]))[0]
        return self.source(self._indices(key))

    def _indices(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            return np.arange(self.n)[key]
        idx = np.asarray(key)
        if idx.dtype == bool:
            return np.flatnonzero(idx)
        idx = idx.astype(np.int64)
        return np.where(idx < 0, idx + self.n, idx)

    def take(self, indices: np.ndarray) -> RowView:
        """The rows ``indices`` as a view (nothing is read)."""
        idx = self._indices(indices)
        return RowView(len(idx), self.row_shape, self.dtype, _Take(self.source, idx))

    def map(self, fn: Callable[[np.ndarray], np.ndarray], dtype: Any = None) -> RowView:
        """``fn`` applied to every batch of rows read (``fn`` keeps the row shape)."""
        return RowView(self.n, self.row_shape, dtype or self.dtype, _Map(self.source, fn))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """Everything, in memory: for the few callers that need a real array of a small view."""
        out = self.source(np.arange(self.n)) if self.n else np.zeros(self.shape, self.dtype)
        return out.astype(dtype) if dtype is not None else out

    def copy(self) -> np.ndarray:
        return np.asarray(self)


def zip_rows(a: RowView | np.ndarray, b: RowView | np.ndarray, fn: Callable[[np.ndarray, np.ndarray], np.ndarray], dtype: Any) -> RowView:
    """``fn(a_rows, b_rows)`` row by row, as a view (``a`` and ``b`` have the same length and row shape)."""
    if len(a) != len(b):
        raise ValueError(f"cannot zip {len(a)} rows with {len(b)}")
    return RowView(len(a), tuple(a.shape[1:]), dtype, _Zip(_source_of(a), _source_of(b), fn))


def _source_of(x: RowView | np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    return x.source if isinstance(x, RowView) else _InMemory(x)


class MemmapRows:
    """Rows of a raw uint8 file of shape (n, *row_shape), optionally scaled to float32 (``scale`` != 1)."""

    def __init__(self, path: Path, n: int, row_shape: tuple[int, ...], scale: float = 1.0) -> None:
        self.path, self.n, self.row_shape, self.scale = Path(path), n, tuple(row_shape), scale
        self._mm: np.memmap | None = None

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        if self._mm is None:
            self._mm = np.memmap(self.path, np.uint8, "r", shape=(self.n, *self.row_shape))
        rows = np.asarray(self._mm[idx])
        return rows if self.scale == 1.0 else rows.astype(np.float32) * np.float32(self.scale)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_mm": None}  # reopened where it lands: a memory map is never pickled whole


class _InMemory:
    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        return self.array[idx]


class _Take:
    def __init__(self, source: Callable[[np.ndarray], np.ndarray], idx: np.ndarray) -> None:
        self.source, self.idx = source, idx

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        return self.source(self.idx[idx])


class _Map:
    def __init__(self, source: Callable[[np.ndarray], np.ndarray], fn: Callable[[np.ndarray], np.ndarray]) -> None:
        self.source, self.fn = source, fn

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        return self.fn(self.source(idx))


class _Zip:
    def __init__(self, a: Callable, b: Callable, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
        self.a, self.b, self.fn = a, b, fn

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        return self.fn(self.a(idx), self.b(idx))


def take_rows(x: RowView | np.ndarray, indices: np.ndarray) -> RowView | np.ndarray:
    """``x[indices]``: a copy for an in-memory array (as before), a view for a :class:`RowView`."""
    return x.take(indices) if isinstance(x, RowView) else x[indices]


__all__ = ["MemmapRows", "RowView", "take_rows", "zip_rows"]
