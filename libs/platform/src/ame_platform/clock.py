"""The one clock every AME service reads the time from, and the simulated time tests share across processes.

Real by default. With `AME_CLOCK_START` (an ISO instant) set, time is simulated:

    simulated(now) = AME_CLOCK_START + (real_now - AME_CLOCK_ANCHOR) * AME_CLOCK_RATE

`AME_CLOCK_ANCHOR` is the real instant at which simulated time equals `AME_CLOCK_START`. Every process given
the same three values computes the same simulated instant at the same real instant, whenever it started, so
separate scheduler replicas, the api and a test agree on "now" without talking to each other. Without an
anchor the start itself is taken as the anchor (`AME_CLOCK_START` is then a real instant, and only the rate
differs), which is also the same in every process. Nothing here reads process-local state such as the time a
process started: that is what would make replicas disagree.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pydantic import AwareDatetime, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ClockSettings(BaseSettings):
    """`AME_CLOCK_*`: real time unless `start` is set (tests, demos)."""

    model_config = SettingsConfigDict(env_prefix="AME_CLOCK_", extra="forbid")

    start: AwareDatetime | None = Field(
        None, description="Simulated time at `anchor` (an ISO instant with a zone). Unset: real time."
    )
    anchor: AwareDatetime | None = Field(
        None, description="The real instant at which simulated time is `start`; defaults to `start` itself."
    )
    rate: float = Field(1.0, gt=0, le=100_000, description="Simulated seconds per real second.")

    @model_validator(mode="after")
    def _needs_start(self) -> ClockSettings:
        if self.start is None and (self.anchor is not None or self.rate != 1.0):
            raise ValueError("AME_CLOCK_ANCHOR and AME_CLOCK_RATE need AME_CLOCK_START")
        return self


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""

    def seconds(self, simulated: float) -> float:
        """How many real seconds `simulated` seconds of this clock's time last (for waits and intervals)."""


class RealClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def seconds(self, simulated: float) -> float:
        return simulated


class SimulatedClock:
    def __init__(self, start: datetime, anchor: datetime, rate: float) -> None:
        self._start = start.astimezone(UTC)
        self._anchor = anchor.timestamp()
        self._rate = rate

    def now(self) -> datetime:
        return self._start + timedelta(seconds=(time.time() - self._anchor) * self._rate)

    def seconds(self, simulated: float) -> float:
        return simulated / self._rate


def clock_from(settings: ClockSettings) -> Clock:
    if settings.start is None:
        return RealClock()
    return SimulatedClock(settings.start, settings.anchor or settings.start, settings.rate)


def platform_clock() -> Clock:
    """The clock these environment settings describe (each service builds it once, at start)."""
    return clock_from(ClockSettings())
