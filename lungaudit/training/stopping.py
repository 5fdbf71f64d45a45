"""Early stopping as a pure rule over (best, bad epochs, new score), so it can be tested on numbers.

Plain patience stops a model that has not started to learn: on a small real set the validation
score sits at chance for the first epochs while the loss falls, and four flat epochs ended training
there (issue 10). So patience only counts once the best score has left chance by a margin.

A score on a few dozen validation images is also noisy: on the Shenzhen sample (18 validation
images) a model after one epoch, at chance-level training loss, scored AUC 0.78, was kept as the
best, and stopped the run six epochs later. So the first ``min_epochs`` epochs are neither
candidates for the best checkpoint nor counted by patience.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class StopRule:
    patience: int = 0  # epochs without a new best before stopping; 0 = never stop early
    chance: float = -math.inf  # the score of a model that has learnt nothing (0.5 for ROC-AUC)
    margin: float = 0.0  # the best score must exceed chance + margin before patience counts
    min_epochs: int = 0  # epochs before this one are not candidates, and no stop comes before it


@dataclass(frozen=True)
class StopState:
    best: float = -math.inf
    bad_epochs: int = 0  # epochs without a new best, counted only while out of chance


def stopping_step(state: StopState, score: float, epoch: int, rule: StopRule) -> tuple[StopState, bool, bool]:
    """Fold one epoch's validation ``score`` (``epoch`` = epochs done, from 1) into ``state``.

    Returns ``(new state, improved, stop)``. ``improved`` is a strictly higher score from epoch
    ``min_epochs`` on, and is what selects the best checkpoint, whether or not the model is out of
    chance yet. A run shorter than ``min_epochs`` must cap it (see :func:`rule_for`).
    """
    if epoch < rule.min_epochs:
        return state, False, False
    if score > state.best:
        return StopState(score, 0), True, False
    out_of_chance = state.best >= rule.chance + rule.margin
    bad = state.bad_epochs + 1 if out_of_chance else 0
    stop = rule.patience > 0 and bad >= rule.patience and epoch >= rule.min_epochs
    return StopState(state.best, bad), False, stop


def rule_for(patience: int, chance: float, margin: float, min_epochs: int, epochs: int) -> StopRule:
    """The rule for a run of ``epochs`` epochs: ``min_epochs`` capped so the last epoch is a candidate."""
    return StopRule(patience, chance, margin, max(0, min(min_epochs, epochs)))
