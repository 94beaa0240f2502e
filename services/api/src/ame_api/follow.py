"""Following a run's output: history first, then live lines, then the end — in order, without gaps.

History comes from the logs service's archive (request/reply) and from the LOGS stream, which keeps each
run's recent output on its own subject. A follower reads the archive, then replays the run's subject from
the start with an ordered consumer, skipping lines it already sent. If the stream no longer holds some lines
(they aged out), the gap is filled from the archive. The end of the output carries the final state and exit
code; if it never comes (a run ended without output, e.g. lost), the registry's terminal state ends the
follow instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import DeliverPolicy

from ame.domain import LogEnd, LogLine
from ame_api import convert
from ame_api.repositories import runs as runs_repo
from ame_api.settings import ApiSettings
from ame_platform.bus.connection import FOLLOWER_HEARTBEAT
from ame_platform.runtime import Runtime

log = logging.getLogger(__name__)

# How long a terminal run may go without an end marker on the bus before the registry's state ends the follow.
_END_GRACE = 3.0
_IDLE_CHECK = 1.0


class LogFollower:
    def __init__(self, runtime: Runtime, settings: ApiSettings) -> None:
        self._rt = runtime
        self._settings = settings

    async def follow(self, run_id: str, from_seq: int = 0) -> AsyncIterator[LogLine | LogEnd]:
        """Yields lines from `from_seq` on, then one LogEnd. Raises NotFound for an unknown run."""
        async with self._rt.pool.acquire() as conn:
            run = await runs_repo.get_run(conn, run_id)
        attempt = run.attempt
        next_seq = from_seq

        archived_end: LogEnd | None = None
        async for line, end in self._history(run.id, next_seq):
            if line is not None:
                yield line
                next_seq = line.seq + 1
            archived_end = end
        if archived_end is not None:
            yield archived_end
            return

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
                    async with self._rt.pool.acquire() as conn:
                        current = await runs_repo.get_run(conn, run.id)
                    if current.state.terminal:
                        terminal_since = terminal_since or loop.time()
                        if loop.time() - terminal_since >= _END_GRACE:
                            yield LogEnd(state=current.state, exit_code=current.exit_code, reason=current.reason)
                            return
                    continue
                try:
                    _, chunk_attempt, lines, end = convert.chunk_events(msg.data)
                except convert.DecodeError:
                    log.warning("skipping undecodable log chunk on %s", msg.subject)
                    continue
                if chunk_attempt < attempt:
                    continue
                if chunk_attempt > attempt:
                    # A retry started: its output follows the previous attempt's, numbered from 0 again.
                    attempt, next_seq = chunk_attempt, 0
                for line in lines:
                    if line.seq < next_seq:
                        continue
                    if line.seq > next_seq:
                        async for missing, _ in self._history(run.id, next_seq, until=line.seq):
                            if missing is not None:
                                yield missing
                    yield line
                    next_seq = line.seq + 1
                if end is not None:
                    yield end
                    return
        finally:
            # The connection may be away (reconnecting): the follow is over either way.
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _history(
        self, run_id: str, from_seq: int, until: int | None = None
    ) -> AsyncIterator[tuple[LogLine | None, LogEnd | None]]:
        """Archived lines from `from_seq` (below `until`), with the archived end once the archive is complete."""
        seq = from_seq
        while True:
            try:
                reply = await self._rt.nc.request(
                    self._rt.names.logs_history,
                    convert.history_request(run_id, seq),
                    timeout=self._settings.history_timeout,
                )
                _, lines, end, has_more = convert.history_reply(reply.data)
            except Exception as exc:
                # The bus still holds recent output; the archive only matters for output older than that.
                log.debug("log archive unavailable for %s: %s", run_id, exc)
                return
            for line in lines:
                if until is not None and line.seq >= until:
                    return
                yield line, None
                seq = line.seq + 1
            if not has_more:
                if end is not None and until is None:
                    yield None, end
                return
