"""Archiving run output from the LOGS stream, and serving it back as history."""

from __future__ import annotations

import contextlib
import logging
import uuid

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ame.domain.limits import MAX_STORED_REASON_CHARS
from ame_logs import convert
from ame_logs.repositories import archive
from ame_logs.settings import LogsSettings
from ame_platform.bus.consumer import ConsumerSpec, Poison, PullConsumer
from ame_platform.bus.subjects import LOGS_ARCHIVE
from ame_platform.faults import clean_text
from ame_platform.lifecycle import Supervisor
from ame_platform.runtime import Runtime

log = logging.getLogger(__name__)

_REPLY_HEADROOM = 4096


class Archiver:
    """Writes every chunk on the LOGS stream to PostgreSQL (idempotently: redeliveries change nothing)."""

    name = "archiver"

    def __init__(self, runtime: Runtime, settings: LogsSettings) -> None:
        self._rt = runtime
        self._consumer = PullConsumer(
            runtime.js,
            ConsumerSpec(
                stream=runtime.names.logs_stream,
                durable=LOGS_ARCHIVE,
                filter_subject=runtime.names.logs_wildcard,
                concurrency=settings.archive_concurrency,
            ),
            self.archive,
            name="archive",
            deadletters=runtime.deadletters,
            tracer=runtime.telemetry.tracer("ame_logs"),
        )

    async def start(self, supervisor: Supervisor) -> None:
        await self._consumer.start(supervisor)

    async def drain(self) -> None:
        await self._consumer.drain()

    async def archive(self, msg: Msg) -> None:
        try:
            chunk = convert.parse_chunk(msg.data)
            uuid.UUID(chunk.run_id)
        except ValueError as exc:
            raise Poison(str(exc)) from exc
        async with self._rt.pool.acquire() as conn, conn.transaction():
            if chunk.payload is not None:
                await archive.create_chunk(
                    conn,
                    run_id=chunk.run_id,
                    attempt=chunk.attempt,
                    first_seq=chunk.first_seq,
                    last_seq=chunk.last_seq,
                    payload=chunk.payload,
                )
            if chunk.end is not None:
                await archive.create_end(
                    conn,
                    run_id=chunk.run_id,
                    attempt=chunk.attempt,
                    state=chunk.end.state.value,
                    exit_code=chunk.end.exit_code,
                    # A NUL or a lone surrogate must not make the chunk unarchivable.
                    reason=clean_text(chunk.end.reason, MAX_STORED_REASON_CHARS),
                    total_lines=chunk.end.total_lines,
                )


class HistoryResponder:
    """Answers history requests (core NATS request/reply, one queue group shared by all replicas)."""

    name = "history"

    def __init__(self, runtime: Runtime, settings: LogsSettings) -> None:
        self._rt = runtime
        self._settings = settings
        self._sub: Subscription | None = None

    async def start(self, supervisor: Supervisor) -> None:
        self._sub = await self._rt.nc.subscribe(
            self._rt.names.logs_history, queue=self._rt.names.queue_group("logs"), cb=self._on_request
        )

    async def drain(self) -> None:
        if self._sub is not None:
            await self._sub.drain()  # type: ignore[no-untyped-call]

    async def _on_request(self, msg: Msg) -> None:
        try:
            reply = await self.history(msg.data)
        except Exception as exc:
            log.exception("history request failed")
            reply = convert.history_error(str(exc))
        await msg.respond(reply)

    async def history(self, data: bytes) -> bytes:
        try:
            run_id, from_seq, limit = convert.parse_history_request(data)
            uuid.UUID(run_id)
        except ValueError as exc:
            return convert.history_error(str(exc))
        limit = min(limit or self._settings.history_page_lines, self._settings.history_page_lines)
        # The reply is one NATS message: leave room under the server's limit for the reply's other fields.
        max_bytes = min(self._settings.history_page_bytes, self._rt.nc.max_payload - _REPLY_HEADROOM)
        page = convert.HistoryPage(from_seq, limit, max_bytes)
        exhausted = True
        async with self._rt.pool.acquire() as conn:
            attempt = await archive.find_latest_attempt(conn, run_id)
            if attempt is None:
                return convert.empty_history()
            chunks = archive.iter_chunks(conn, run_id=run_id, attempt=attempt, from_seq=from_seq)
            async with conn.transaction(), contextlib.aclosing(chunks):
                async for payload in chunks:
                    if not page.add(payload):
                        exhausted = False
                        break
            archived_end = await archive.find_end(conn, run_id=run_id, attempt=attempt)
        more_pages = not page.gap and not exhausted
        end = None
        # The end goes with the last page only. Its total_lines is 0 when the output's producer vanished
        # (a lost run), so "every line up to total_lines was returned" alone is not enough.
        if archived_end is not None and not page.gap and not more_pages and page.next_seq >= archived_end.total_lines:
            end = convert.end_from_archive(
                archived_end.state, archived_end.exit_code, archived_end.reason, archived_end.total_lines
            )
        return page.reply(attempt=attempt, end=end, has_more=more_pages and end is None)
