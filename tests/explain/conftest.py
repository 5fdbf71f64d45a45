"""Fixtures shared by the explain tests."""

from __future__ import annotations

from typing import Iterator

import pytest
import torch
from explain_helpers import smooth_images


@pytest.fixture(autouse=True, scope="package")
def _one_thread() -> Iterator[None]:
    """One intra-op thread for these tiny models: the per-op work is too small to split, and on a
    shared, loaded machine OpenMP threads waiting for each other made the module ~20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """(3, 1, 64, 64) smooth random images in [0, 1]."""
    return smooth_images(3)
