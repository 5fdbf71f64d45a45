"""Early stopping as a pure rule over (best, bad epochs, new score), so it can be tested on numbers.

Plain patience stops a model that has not started to learn: on a small real set the validation
score sits at chance for the first epochs while the loss falls, and four flat epochs ended training
there (issue 10). So patience only counts once the best score has left chance by a margin, and
never fires before a minimum epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class StopRule:
    patience: int = 0  # epochs without a new best before stopping; 0 = never stop early
    chance: float = -math.inf  # the score of a model that has learnt nothing (0.5 for ROC-AUC)
    margin: float = 0.0  # the best score must exceed chance + margin before patience counts
    min_epochs: int = 0  # no stop before this many epochs are done


@dataclass(frozen=True)
class StopState:
    best: float = -math.inf
    bad_epochs: int = 0  # epochs without a new best, counted only while out of chance


def stopping_step(state: StopState, score: float, epoch: int, rule: StopRule) -> tuple[StopState, bool, bool]:
    """Fold one epoch's validation ``score`` (``epoch`` = epochs done, from 1) into ``state``.

    Returns ``(new state, improved, stop)``. ``improved`` is a strictly higher score, and is what
    selects the best checkpoint, whether or not the model is out of chance yet.
    """
    if score > state.best:
        return StopState(score, 0), True, False
    out_of_chance = state.best >= rule.chance + rule.margin
    bad = state.bad_epochs + 1 if out_of_chance else 0
    stop = rule.patience > 0 and bad >= rule.patience and epoch >= rule.min_epochs
    return StopState(state.best, bad), False, stop
