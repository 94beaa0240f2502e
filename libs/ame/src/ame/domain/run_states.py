"""The run lifecycle: queued -> launching -> running -> one terminal state.

JetStream delivers at least once and events from different producers can arrive out of order, so every
consumer of run events applies a transition only when it moves the run forward. Terminal states never change.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    """Run states; the values are the wire names used in YAML, REST, gRPC and the CLI."""

    QUEUED = "queued"
    LAUNCHING = "launching"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    LOST = "lost"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def rank(self) -> int:
        """Order along the lifecycle; all terminal states share the last rank."""
        return _RANK[self]


TERMINAL_STATES = frozenset(
    {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.TIMED_OUT, RunState.LOST}
)

_RANK = {
    RunState.QUEUED: 0,
    RunState.LAUNCHING: 1,
    RunState.RUNNING: 2,
    **{state: 3 for state in TERMINAL_STATES},
}


def is_forward_transition(current: RunState, new: RunState) -> bool:
    """True when `new` may replace `current`: strictly later in the lifecycle, and never out of a terminal state."""
    return not current.terminal and new.rank > current.rank


# An attempt that ended so is followed by another while the run has retries left; a cancelled one never is.
RETRYABLE_STATES = frozenset({RunState.FAILED, RunState.TIMED_OUT, RunState.LOST})


def retry_follows(state: RunState, attempt: int, retries: int) -> bool:
    """Whether attempt `attempt` ending in `state` is followed by another, for a run allowed `retries` retries
    (so `1 + retries` attempts in all). The registry and the log followers decide by this same rule."""
    return state in RETRYABLE_STATES and attempt < 1 + max(0, retries)
