"""Progress reporting hooks: the loop calls these and never imports a UI library."""

from __future__ import annotations

from typing import Any


class TrainCallback:
    """No-op base; the CLI subclasses it to drive rich progress bars."""

    def stage_start(self, stage: str, start_epoch: int, epochs: int, steps_per_epoch: int) -> None: ...

    def step(self, stage: str, epoch: int, step: int, loss: float) -> None: ...

    def epoch_end(self, stage: str, row: dict[str, Any]) -> None: ...

    def stage_end(self, stage: str, summary: dict[str, Any]) -> None: ...

    def message(self, text: str) -> None: ...
