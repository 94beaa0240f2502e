"""The run lifecycle: which transitions the registry may apply."""

from __future__ import annotations

import itertools

import pytest

from ame.domain import TERMINAL_STATES, RunState, is_forward_transition

ACTIVE = [RunState.QUEUED, RunState.LAUNCHING, RunState.RUNNING]
TERMINAL = [RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.TIMED_OUT, RunState.LOST]


def test_wire_names_are_the_seed_words() -> None:
    assert [s.value for s in RunState] == [
        "queued",
        "launching",
        "running",
        "succeeded",
        "failed",
        "cancelled",
        "timed_out",
        "lost",
    ]
    assert RunState("timed_out") is RunState.TIMED_OUT


def test_terminal_states_are_exactly_the_end_states() -> None:
    assert set(TERMINAL_STATES) == set(TERMINAL)
    assert all(s.terminal for s in TERMINAL)
    assert not any(s.terminal for s in ACTIVE)


def test_the_lifecycle_moves_forward_one_way() -> None:
    path = [*ACTIVE, RunState.SUCCEEDED]
    for earlier, later in itertools.combinations(path, 2):
        assert is_forward_transition(earlier, later), (earlier, later)
        assert not is_forward_transition(later, earlier), (later, earlier)


@pytest.mark.parametrize("current", ACTIVE)
@pytest.mark.parametrize("terminal", TERMINAL)
def test_any_active_state_may_end_in_any_terminal_state(current: RunState, terminal: RunState) -> None:
    assert is_forward_transition(current, terminal)


@pytest.mark.parametrize(("current", "new"), list(itertools.product(TERMINAL, RunState)))
def test_terminal_states_never_change(current: RunState, new: RunState) -> None:
    assert not is_forward_transition(current, new)


@pytest.mark.parametrize("state", list(RunState))
def test_a_repeated_event_is_not_a_transition(state: RunState) -> None:
    assert not is_forward_transition(state, state)


def test_a_run_can_be_lost_or_cancelled_before_it_ever_runs() -> None:
    assert is_forward_transition(RunState.QUEUED, RunState.CANCELLED)
    assert is_forward_transition(RunState.LAUNCHING, RunState.LOST)
    # A late "running" after the run was already reported lost must not revive it.
    assert not is_forward_transition(RunState.LOST, RunState.RUNNING)


def test_rank_orders_the_lifecycle() -> None:
    assert RunState.QUEUED.rank < RunState.LAUNCHING.rank < RunState.RUNNING.rank
    assert {s.rank for s in TERMINAL} == {RunState.RUNNING.rank + 1}
