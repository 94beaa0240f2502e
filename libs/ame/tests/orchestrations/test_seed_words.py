"""The one mapping from run states to seed 004's words, task statuses, and the seed's tables."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ame.domain import RunState
from ame.domain.orchestrations import (
    OrchestrationStatus,
    TaskKind,
    TaskStatus,
    packaging_status,
    seed_word,
    states_for_word,
    task_status,
)
from ame.sdk.tables import html_table, seed_time, short_sha, text_table


def test_every_run_state_has_a_seed_word_and_back() -> None:
    assert {s: seed_word(s) for s in RunState} == {
        RunState.QUEUED: "pending",
        RunState.LAUNCHING: "started",
        RunState.RUNNING: "running",
        RunState.SUCCEEDED: "success",
        RunState.FAILED: "failure",
        RunState.TIMED_OUT: "failure",
        RunState.LOST: "failure",
        RunState.CANCELLED: "killed",
    }
    assert seed_word(None) == "unknown"
    for state in RunState:
        assert state in (states_for_word(seed_word(state)) or [])
    assert states_for_word("all") is None
    with pytest.raises(ValueError, match="is not one of"):
        states_for_word("succeeded")  # AME's word, not the seed's


def test_packaging_and_task_statuses() -> None:
    assert packaging_status(None) is OrchestrationStatus.PENDING_PACKAGING
    assert packaging_status(RunState.RUNNING) is OrchestrationStatus.PENDING_PACKAGING
    assert packaging_status(RunState.SUCCEEDED) is OrchestrationStatus.READY
    assert packaging_status(RunState.FAILED) is OrchestrationStatus.PACKAGING_FAILED
    once, scheduled = TaskKind.ONCE, TaskKind.SCHEDULED
    assert task_status(kind=once, killed=False, last_state=RunState.RUNNING, any_active=True) is TaskStatus.STARTED
    assert task_status(kind=once, killed=False, last_state=RunState.SUCCEEDED, any_active=False) is TaskStatus.SUCCESS
    assert task_status(kind=once, killed=False, last_state=RunState.LOST, any_active=False) is TaskStatus.FAILURE
    assert task_status(kind=scheduled, killed=False, last_state=RunState.FAILED, any_active=False) is TaskStatus.STARTED
    assert task_status(kind=scheduled, killed=True, last_state=None, any_active=True) is TaskStatus.PENDING_KILL
    assert task_status(kind=scheduled, killed=True, last_state=None, any_active=False) is TaskStatus.KILLED
    assert TaskStatus.PENDING_KILL == "pending_kill"


def test_tables_as_the_seed_prints_them() -> None:
    assert seed_time(datetime(2023, 5, 22, 19, 55, 15, tzinfo=UTC)) == "2023-22-May 19:55:15"
    assert short_sha("b88e93" + "0" * 52 + "2396fb") == "b88e93...2396fb"
    rows = [["0f90e606", "comprehensive <sample>"]]
    assert text_table(["id", "name"], rows).splitlines() == [
        "id        name",
        "--------  ----------------------",
        "0f90e606  comprehensive <sample>",
    ]
    assert html_table(["id", "name"], rows) == (
        "<table><thead><tr><th>id</th><th>name</th></tr></thead>"
        "<tbody><tr><td>0f90e606</td><td>comprehensive &lt;sample&gt;</td></tr></tbody></table>"
    )
