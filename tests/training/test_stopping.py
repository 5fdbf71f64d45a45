"""Early stopping as a pure rule: it must not stop a model that has not left chance."""

import math

import pytest

from lungaudit.training.stopping import StopRule, StopState, rule_for, stopping_step

AUC = StopRule(patience=3, chance=0.5, margin=0.05, min_epochs=0)


def run(scores, rule):
    """Epoch (from 1) at which the rule stops, or None; and the final state."""
    state = StopState()
    for epoch, score in enumerate(scores, start=1):
        state, _improved, stop = stopping_step(state, score, epoch, rule)
        if stop:
            return epoch, state
    return None, state


def test_a_model_at_chance_is_never_stopped():
    # A flat validation AUC near 0.5 (the issue-10 failure: one class predicted for everything).
    at_chance = [0.5, 0.52, 0.48, 0.51, 0.5, 0.49, 0.53, 0.5, 0.47, 0.5, 0.52, 0.5]
    assert run(at_chance, AUC)[0] is None
    # The same sequence with plain patience (no chance gate) would have stopped at epoch 5.
    assert run(at_chance, StopRule(patience=3))[0] == 5


def test_patience_counts_only_after_leaving_chance_by_the_margin():
    scores = [0.5, 0.54, 0.53, 0.52, 0.51, 0.7, 0.69, 0.68, 0.66]
    # 0.54 is within the margin (0.55): epochs 3-5 do not count; 0.7 starts the count, 3 flat epochs stop.
    assert run(scores, AUC)[0] == 9
    stop, state = run(scores[:8], AUC)
    assert stop is None and state.best == 0.7 and state.bad_epochs == 2


def test_early_epochs_are_neither_best_nor_counted():
    scores = [0.8, 0.7, 0.7, 0.7, 0.7, 0.7, 0.6, 0.6]
    assert run(scores, AUC)[0] == 4  # without a warm-up the lucky first epoch stops the run
    rule = StopRule(patience=3, chance=0.5, margin=0.05, min_epochs=4)
    stop, state = run(scores, rule)
    assert stop == 7 and state.best == 0.7  # epoch 1's 0.8 was never the best
    state, improved, stop = stopping_step(StopState(), 0.9, 1, rule)
    assert state == StopState() and not improved and not stop


def test_a_short_run_still_has_a_best_epoch():
    rule = rule_for(patience=4, chance=0.5, margin=0.05, min_epochs=7, epochs=2)
    assert rule.min_epochs == 2
    assert stopping_step(StopState(), 0.5, 2, rule)[1]


def test_improvement_resets_and_is_reported():
    state, improved, stop = stopping_step(StopState(0.8, 2), 0.81, 5, AUC)
    assert improved and not stop and state == StopState(0.81, 0)
    state, improved, stop = stopping_step(state, 0.81, 6, AUC)  # equal is not better
    assert not improved and state.bad_epochs == 1


@pytest.mark.parametrize("patience", [0])
def test_patience_zero_never_stops(patience):
    assert run([0.9] + [0.1] * 50, StopRule(patience=patience, chance=0.5))[0] is None


def test_default_rule_is_plain_patience():
    rule = StopRule(patience=2)
    assert rule.chance == -math.inf
    assert run([0.1, 0.05, 0.05], rule)[0] == 3
