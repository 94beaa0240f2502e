"""Publishes a run's output to its log subject in ordered, numbered chunks.

Lines are batched (up to `max_lines`, or whatever arrived within `flush_interval`) because one JetStream
publish per line would cap a chatty training script at a few thousand lines per second. Chunks are published
one at a time, in order, each with a Nats-Msg-Id derived from its first line's number, so a retried publish
is dropped by the server. When publishing falls behind, writers wait (bounded buffer), which slows the read
side of the pipe and so, eventually, the process itself — output is never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from nats.js import JetStreamContext

from ame.domain import LogEnd, LogLine, LogStreamName
from ame_launcher import convert
from ame_platform.bus.publisher import headers_for

log = logging.getLogger(__name__)


class ChunkPublisher:
    def __init__(
        self,
        js: JetStreamContext,
        subject: str,
        run_id: str,
        attempt: int,
        *,
        max_lines: int = 256,
        flush_interval: float = 0.02,
    ) -> None:
        self._js = js
        self._subject = subject
        self._run_id = run_id
        self._attempt = attempt
        self._max_lines = max_lines
        self._flush_interval = flush_interval
        self._buffer: list[LogLine] = []
        self._next_seq = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    @property
    def lines_written(self) -> int:
        return self._next_seq

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_loop(), name=f"logs:{self._run_id}")

    async def write(self, stream: LogStreamName, text: str) -> None:
        while len(self._buffer) >= self._max_lines * 4:
            self._room.clear()
            self._wake.set()
            await self._room.wait()
        self._buffer.append(LogLine(seq=self._next_seq, stream=stream, text=text, at=datetime.now(UTC)))
        self._next_seq += 1
        if len(self._buffer) >= self._max_lines:
            self._wake.set()

    async def close(self, end: LogEnd) -> None:
        """Publish what is buffered and then the end of the output (in the same last chunk)."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
        lines, self._buffer = self._buffer, []
        end = end.model_copy(update={"total_lines": self._next_seq})
        await self._publish(lines, end)

    async def _flush_loop(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._flush_interval)
            self._wake.clear()
            if self._closed:
                return
            while self._buffer:
                batch, self._buffer = self._buffer[: self._max_lines], self._buffer[self._max_lines :]
                await self._publish(batch, None)
                self._room.set()

    async def _publish(self, lines: list[LogLine], end: LogEnd | None) -> None:
        if not lines and end is None:
            return
        payload, msg_id = convert.log_chunk(self._run_id, self._attempt, lines, end)
        delay = 0.1
        while True:
            try:
                await self._js.publish(self._subject, payload, headers=headers_for(msg_id), timeout=5.0)
                return
            except Exception:
                # NATS may be reconnecting; the same msg id makes the retry safe. Give up only on cancel.
                log.warning("publishing log chunk %s failed; retrying", msg_id, exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
