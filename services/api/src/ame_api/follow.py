"""Following a run's output: history first, then live lines, then the end — in order, without gaps.

History comes from the logs service's archive (request/reply) and from the LOGS stream, which keeps each
run's recent output on its own subject. A follower reads the archive, then replays the run's subject from
the start with an ordered consumer, skipping lines it already sent. If the stream no longer holds some lines
(they aged out), the gap is filled from the archive. The end of the output carries the final state and exit
code; if it never comes (a run ended without output, e.g. lost), the registry's terminal state ends the
follow instead.

A run with retries has one output per attempt (numbered from 0 each time). A follower goes through them in turn:
the end of an attempt that another follows (`retry_follows`, the registry's own rule) is not the end of the
follow, which goes on with the next attempt's output and ends with the last attempt's end and exit code.

Lines travel in batches (`LineBatch`: a bus chunk or a page of history, in wire form), so a follower's cost is
per batch, not per line: a chatty run prints tens of thousands of lines a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from ame.domain import LogEnd, retry_follows
from ame.domain.principals import Principal
from ame_api import convert
from ame_api.convert import LineBatch
from ame_api.repositories import runs as runs_repo
from ame_api.settings import ApiSettings
from ame_platform.bus.connection import FOLLOWER_HEARTBEAT
from ame_platform.faults import is_transient
from ame_platform.runtime import Runtime

log = logging.getLogger(__name__)

# How long a terminal run may go without an end marker on the bus before the registry's state ends the follow.
_END_GRACE = 3.0
_IDLE_CHECK = 1.0
# How long a follower waits for the archive to fill a gap in the bus's copy of a run's output, and how often it asks.
_GAP_WAIT = 10.0
_GAP_POLL = 0.2


class LogFollower:
    def __init__(self, runtime: Runtime, settings: ApiSettings) -> None:
        self._rt = runtime
        self._settings = settings

    async def follow(self, principal: Principal, run_id: str, from_seq: int = 0) -> AsyncIterator[LineBatch | LogEnd]:
        """Yields batches of consecutive lines from `from_seq` on, then one LogEnd. Raises NotFound for an unknown
        run or another organisation's. Batches are never empty."""
        org = principal.organisation
        async with self._rt.pool.acquire() as conn:
            run = await runs_repo.get_run(conn, run_id, organisation=org)
        retries = run.spec.retries
        attempt = run.attempt
        next_seq = from_seq

        archived_end: LogEnd | None = None
        async for batch, end, archived_attempt in self._history(run.id, next_seq):
            if batch is not None:
                yield batch
                next_seq = batch.last_seq + 1
            attempt = archived_attempt or attempt
            archived_end = end
        if archived_end is not None:
            if not retry_follows(archived_end.state, attempt, retries):
                yield archived_end
                return
            # That attempt ended and another follows: go on with its output, live.
            attempt, next_seq = attempt + 1, 0

        sub = await self._rt.js.subscribe(
            self._rt.names.run_log(run.id),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
            stream=self._rt.names.logs_stream,
            # Resumes within a few seconds after a NATS restart lost the consumer (see FOLLOWER_HEARTBEAT).
            idle_heartbeat=FOLLOWER_HEARTBEAT,
        )
        terminal_since: float | None = None
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=_IDLE_CHECK)
                except (TimeoutError, NatsTimeoutError):
                    try:
                        async with self._rt.pool.acquire() as conn:
                            current = await runs_repo.get_run(conn, run.id, organisation=org)
                    except Exception as exc:
                        if not is_transient(exc):
                            raise
                        continue  # the database is away: the follower waits for output or for it to return
                    if current.state.terminal:
                        terminal_since = terminal_since or loop.time()
                        if loop.time() - terminal_since >= _END_GRACE:
                            # The end marker goes out before the final state, so it is normally here by now; the
                            # archive may have it (and lines) when this subscription stalled.
                            found_end: LogEnd | None = None
                            caught_up = next_seq
                            async for missing, archived, _ in self._history(run.id, next_seq):
                                if missing is not None:
                                    yield missing
                                    next_seq = missing.last_seq + 1
                                found_end = archived or found_end
                            if found_end is not None:
                                yield found_end
                                return
                            if next_seq == caught_up and not await self._bus_is_ahead(run.id, attempt, next_seq):
                                yield LogEnd(state=current.state, exit_code=current.exit_code, reason=current.reason)
                                return
                            # The archive had more: this follower was behind, not the output unfinished.
                            terminal_since = None
                    continue
                # Output is still arriving: the grace before the registry's state ends the follow starts over.
                terminal_since = None
                try:
                    chunk_attempt, batch, end = convert.chunk_events(msg.data)
                except convert.DecodeError:
                    log.warning("skipping undecodable log chunk on %s", msg.subject)
                    continue
                if chunk_attempt < attempt:
                    continue
                if chunk_attempt > attempt:
                    # A retry started: its output follows the previous attempt's, numbered from 0 again.
                    attempt, next_seq = chunk_attempt, 0
                batch = batch.since(next_seq)
                if batch:
                    if batch.first_seq > next_seq:
                        async for missing in self._fill_gap(run.id, next_seq, batch.first_seq):
                            yield missing
                    yield batch
                    next_seq = batch.last_seq + 1
                if end is not None:
                    if retry_follows(end.state, attempt, retries):
                        attempt, next_seq = attempt + 1, 0
                        continue
                    yield end
                    return
        finally:
            # The connection may be away (reconnecting): the follow is over either way.
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _bus_is_ahead(self, run_id: str, attempt: int, next_seq: int) -> bool:
        """Whether the bus holds output of this attempt past `next_seq`: then this subscription stalled (as after
        a NATS restart, until the ordered consumer is re-created) and the follow must wait, not end early."""
        try:
            last = await self._rt.js.get_last_msg(self._rt.names.logs_stream, self._rt.names.run_log(run_id))
            last_attempt, batch, end = convert.chunk_events(last.data or b"")
        except NotFoundError:
            return False
        except convert.DecodeError:
            return False
        except Exception as exc:
            if is_transient(exc):
                return True  # cannot tell now; look again on the next idle check
            raise
        return last_attempt > attempt or (last_attempt == attempt and (end is not None or bool(batch.since(next_seq))))

    async def _fill_gap(self, run_id: str, from_seq: int, until: int) -> AsyncIterator[LineBatch]:
        """Lines the bus no longer holds (they aged out), from the archive. The archiver may not have written them
        yet, so wait for it a while before going on without them."""
        log.info("lines %d-%d of run %s are not on the bus; reading them from the archive", from_seq, until - 1, run_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _GAP_WAIT
        while True:
            async for missing, _, _ in self._history(run_id, from_seq, until=until):
                if missing is not None:
                    yield missing
                    from_seq = missing.last_seq + 1
            if from_seq >= until or loop.time() >= deadline:
                break
            await asyncio.sleep(_GAP_POLL)
        if from_seq < until:
            log.warning("lines %d-%d of run %s are neither on the bus nor in the archive", from_seq, until - 1, run_id)

    async def _history(
        self, run_id: str, from_seq: int, until: int | None = None
    ) -> AsyncIterator[tuple[LineBatch | None, LogEnd | None, int]]:
        """Archived lines of the run's latest archived attempt from `from_seq` (below `until`), a page at a time, with
        the archived end once the archive is complete, each with the attempt's number (0: none archived). The next
        page is asked for while the current one goes to the client, so that the archive's read overlaps the
        sending."""
        seq = from_seq
        pending = asyncio.ensure_future(self._page(run_id, seq))
        try:
            while True:
                try:
                    batch, end, has_more = await pending
                except Exception as exc:
                    # The bus still holds recent output; the archive only matters for output older than that.
                    log.debug("log archive unavailable for %s: %s", run_id, exc)
                    return
                if until is not None:
                    batch = batch.before(until)
                if batch:
                    seq = batch.last_seq + 1
                last = (until is not None and seq >= until) or not has_more or not batch
                if not last:
                    pending = asyncio.ensure_future(self._page(run_id, seq))
                if batch:
                    yield batch, None, batch.attempt
                if last:
                    if end is not None and until is None and not has_more:
                        yield None, end, batch.attempt
                    return
        finally:
            # The follower stopped early (client gone): drop the page asked for ahead, and its error if it failed.
            pending.cancel()
            if pending.done() and not pending.cancelled():
                pending.exception()

    async def _page(self, run_id: str, from_seq: int) -> tuple[LineBatch, LogEnd | None, bool]:
        reply = await self._rt.nc.request(
            self._rt.names.logs_history,
            convert.history_request(run_id, from_seq),
            timeout=self._settings.history_timeout,
        )
        return convert.history_reply(reply.data)
