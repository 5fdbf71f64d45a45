"""Shared fixtures: a tiny synthetic data set generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from lungaudit.config import SynthConfig

TINY_SYNTH = SynthConfig(n_per_class=8, size=64, seed=0, shortcuts=("markers",), workers=1)


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a 4 x 8-image, 64 px synthetic set (markers on) in the real-DB layout + manifest.csv."""
    from lungaudit.data.synth import generate

    root = tmp_path_factory.mktemp("tiny_synth")
    generate(root, TINY_SYNTH)
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory):
    """A complete tiny training run (segmenter + classifier) on ``tiny_synth``; returns TrainResult."""
    from lungaudit.training.pipeline import train
    from pipeline_helpers import tiny_config

    project = tmp_path_factory.mktemp("runs")
    return train(tiny_config(tiny_synth, project))
