"""Organisation limits and loops: what the api's admission step holds runs to before it launches them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ame.domain.limits import INT32_MAX, MAX_TIMEOUT_SECONDS

__all__ = ["LoopLimits", "OrganisationLimits", "effective_timeout"]


class OrganisationLimits(BaseModel):
    """An organisation's limits; None means no limit.

    `max_runs` bounds the runs of the organisation's own queue (tasks that name no loop) that hold a slot
    (admitted, launching or running); a queue with `max_runs` 1 is PEACH's sequential loop. `max_gpus` bounds
    the GPUs of all its admitted runs, loops included. `default_timeout_seconds` is the timeout of a run that
    sets none (a loop's own default comes first).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_runs: int | None = Field(None, ge=1, le=INT32_MAX)
    max_gpus: int | None = Field(None, ge=0, le=INT32_MAX)
    default_timeout_seconds: float | None = Field(None, gt=0, le=MAX_TIMEOUT_SECONDS, allow_inf_nan=False)


class LoopLimits(BaseModel):
    """A named loop a task joins with `loop:`. Shared: one queue for every organisation (seed 002's
    `metadata`); otherwise each organisation has its own queue of that name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency: int | None = Field(1, ge=1, le=INT32_MAX)
    default_timeout_seconds: float | None = Field(None, gt=0, le=MAX_TIMEOUT_SECONDS, allow_inf_nan=False)
    shared: bool = True


def effective_timeout(
    own: float | None, loop: LoopLimits | None, organisation: OrganisationLimits | None
) -> float | None:
    """The run's own timeout, else its loop's default, else its organisation's, else none."""
    if own:
        return own
    if loop is not None and loop.default_timeout_seconds:
        return loop.default_timeout_seconds
    if organisation is not None and organisation.default_timeout_seconds:
        return organisation.default_timeout_seconds
    return None
