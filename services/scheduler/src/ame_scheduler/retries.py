"""Retries: a new attempt of the same run, launched after a backoff.

The api's registry asks for attempt n+1 when attempt n ended failed, timed_out or lost with retries left
(`RunRetryRequested`, carrying the attempt's launch command). The retry is recorded here under its unique
(run, attempt) key, due after an exponential backoff with a cap, and a periodic pass publishes the launch
command of each retry that came due. Both sides survive a restart: the request is acknowledged only once it
is recorded, the record lives in PostgreSQL, and the launch carries `Nats-Msg-Id = launch:<run>:<attempt>`
(the launcher's lease on (run, attempt) is the last guard), so a due retry launches once.

A run cancelled during its backoff is not launched again: the pass looks at the run's cancel subject (the
events stream keeps the last cancel of each run) and ends the waiting attempt `cancelled` instead. The api has
normally done so already when the cancel arrived; this covers a cancel that crossed the failure of the attempt
before it. Retries never go back through admission: the run keeps the slot it was admitted with.
"""

from __future__ import annotations

import logging

from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from ame import bus_messages
from ame.domain import RunState
from ame_platform.bus.consumer import Poison
from ame_platform.bus.publisher import headers_for
from ame_platform.runtime import Runtime
from ame_scheduler import convert
from ame_scheduler.repositories import retries
from ame_scheduler.settings import SchedulerSettings

log = logging.getLogger(__name__)

_CANCELLED_REASON = "cancelled while waiting to be retried"


def backoff_seconds(settings: SchedulerSettings, attempt: int) -> float:
    """The wait before attempt `attempt` (2 for the first retry): exponential, capped."""
    exponent = max(0, attempt - 2)
    return float(
        min(settings.retry_backoff * settings.retry_backoff_factor ** min(exponent, 64), settings.retry_backoff_max)
    )


class Retrier:
    def __init__(self, runtime: Runtime, settings: SchedulerSettings) -> None:
        self._rt = runtime
        self._settings = settings

    async def handle_request(self, msg: Msg) -> None:
        """Consumer of RunRetryRequested: record the retry (idempotent); the message is acked once it is stored."""
        try:
            request = convert.parse_retry_requested(msg.data)
        except convert.DecodeError as exc:
            raise Poison(str(exc)) from exc
        delay = backoff_seconds(self._settings, request.attempt)
        async with self._rt.pool.acquire() as conn:
            added = await retries.add_retry(
                conn, run_id=request.run_id, attempt=request.attempt, delay_seconds=delay, launch=request.launch
            )
        if added:
            log.info(
                "run %s: attempt %d %s; attempt %d in %.1fs",
                request.run_id,
                request.attempt - 1,
                request.previous_state.value,
                request.attempt,
                delay,
            )

    async def launch_due(self) -> int:
        """Publish the launch command of every retry whose backoff is over; returns how many were launched."""
        launched = 0
        async with self._rt.pool.acquire() as conn, conn.transaction():
            # Published inside the transaction: if a publish fails the rows stay pending for the next pass, and if
            # the commit fails after a publish the msg id makes the next pass's publish a no-op.
            for due in await retries.claim_due(conn, limit=100):
                if await self._cancelled(due.run_id):
                    await self._end_cancelled(due)
                    await retries.settle(conn, run_id=due.run_id, attempt=due.attempt, state="cancelled")
                    continue
                await self._rt.js.publish(
                    self._rt.names.run_launch,
                    due.launch,
                    headers=headers_for(bus_messages.launch_msg_id(due.run_id, due.attempt)),
                    timeout=5.0,
                )
                await retries.settle(conn, run_id=due.run_id, attempt=due.attempt, state="launched")
                launched += 1
        return launched

    async def _cancelled(self, run_id: str) -> bool:
        try:
            raw = await self._rt.js.get_last_msg(
                self._rt.names.events_stream, self._rt.names.run_cancel_requested(run_id)
            )
        except NotFoundError:
            return False
        return convert.is_cancel(raw.data or b"")

    async def _end_cancelled(self, due: retries.DueRetry) -> None:
        event, end = convert.cancelled(due.run_id, due.attempt, _CANCELLED_REASON)
        # The same ids the api uses when it cancels the waiting attempt itself: whichever comes second is dropped.
        await self._rt.js.publish(
            self._rt.names.run_log(due.run_id),
            end,
            headers=headers_for(bus_messages.log_end_msg_id(due.run_id, due.attempt, "cancelled")),
            timeout=5.0,
        )
        await self._rt.js.publish(
            self._rt.names.run_state(RunState.CANCELLED),
            event,
            headers=headers_for(bus_messages.state_msg_id(due.run_id, due.attempt, RunState.CANCELLED)),
            timeout=5.0,
        )
        log.info("run %s: cancelled during its backoff; attempt %d is not launched", due.run_id, due.attempt)
