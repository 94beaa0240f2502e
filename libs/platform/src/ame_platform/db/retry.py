"""Database faults that pass (a restart, a failover, a dropped connection) retried with backoff.

A run's outcome is decided by its process, never by the database: a caller that records something about a run
retries a passing fault until the database is back rather than letting it end the run. Only faults that a retry
can cure count as passing (`ame_platform.faults` decides); a data error or a bug is raised at once.

Every retry takes a fresh connection from the pool: a connection that saw a fault may be broken in ways a retry on
it would only repeat (asyncpg reports "cannot switch to state ...; another operation is in progress" when a pool
resets a connection the server has just closed). The operation must therefore be idempotent: a statement that
committed before its response was lost runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from ame_platform.db import Connection
from ame_platform.faults import is_transient

log = logging.getLogger(__name__)

T = TypeVar("T")


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    stop: asyncio.Event | None = None,
    give_up_after: float | None = None,
    on_fault: Callable[[BaseException], Awaitable[None]] | None = None,
    first_delay: float = 0.1,
    max_delay: float = 5.0,
) -> T:
    """Run `operation` until it succeeds, retrying passing faults with backoff (`first_delay` doubling up to
    `max_delay`). Any other error is raised at once; a passing fault is raised once `stop` is set or
    `give_up_after` seconds have passed. `on_fault` is awaited after each passing fault (to tell a broker the
    work is still in hand, say)."""
    delay = first_delay
    failures = 0
    deadline = None if give_up_after is None else time.monotonic() + give_up_after
    while True:
        try:
            result = await operation()
        except Exception as exc:
            if (
                not is_transient(exc)
                or (stop is not None and stop.is_set())
                or (deadline is not None and time.monotonic() >= deadline)
            ):
                raise
            failures += 1
            # The first fault of a streak is worth a warning; the rest would flood the log during an outage.
            level = logging.WARNING if failures == 1 else logging.DEBUG
            log.log(level, "%s: database unavailable (%s: %s); retrying", what, type(exc).__name__, exc)
            if on_fault is not None:
                await on_fault(exc)
            if stop is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(delay * 2, max_delay)
            continue
        if failures:
            log.info("%s: database back after %d failed tries", what, failures)
        return result


async def with_connection(
    pool: asyncpg.Pool,
    action: Callable[[Connection], Awaitable[T]],
    *,
    what: str,
    stop: asyncio.Event | None = None,
    give_up_after: float | None = None,
    on_fault: Callable[[BaseException], Awaitable[None]] | None = None,
) -> T:
    """`action` on a connection from `pool`, with `retry_transient`; each try takes a fresh connection."""

    async def attempt() -> T:
        async with pool.acquire() as conn:
            return await action(conn)

    return await retry_transient(attempt, what=what, stop=stop, give_up_after=give_up_after, on_fault=on_fault)
