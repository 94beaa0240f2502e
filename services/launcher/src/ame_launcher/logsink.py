"""Publishes a run's output to its log subject in ordered, numbered chunks.

Lines are batched (up to `max_lines` lines and `max_bytes` of text, or whatever arrived within
`flush_interval`) because one JetStream publish per line would cap a chatty training script at a few thousand
lines per second, while the byte cap keeps every chunk well under the server's message size limit (1 MiB by
default; a line is at most 64 KiB). Chunks are published one at a time, in order, each with a Nats-Msg-Id
derived from its first line's number, so a retried publish is dropped by the server. When publishing falls
behind, writers wait (bounded buffer), which slows the read side of the pipe and so, eventually, the process
itself — output is never dropped. Lines wait in the buffer as plain tuples and become wire messages a chunk at
a time: the launcher takes in a chatty run's lines at tens of thousands a second, on the same event loop as
everything else it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.js import JetStreamContext

from ame.domain import LogEnd, LogStreamName
from ame_launcher import convert
from ame_platform.bus.publisher import publish_until_stored

log = logging.getLogger(__name__)

# Room for the chunk's other fields and the protobuf framing of each line.
_LINE_OVERHEAD = 32


class ChunkPublisher:
    def __init__(
        self,
        js: JetStreamContext,
        subject: str,
        run_id: str,
        attempt: int,
        *,
        max_lines: int = 256,
        max_bytes: int = 256 * 1024,
        flush_interval: float = 0.02,
        publish_attempts: int | None = None,
        first_seq: int = 0,
    ) -> None:
        self._js = js
        self._subject = subject
        self._run_id = run_id
        self._attempt = attempt
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._flush_interval = flush_interval
        self._publish_attempts = publish_attempts
        self._buffer: list[convert.BufferedLine] = []
        self._buffered_bytes = 0
        # Above 0 for a launcher that adopted a run whose log another launcher began.
        self._next_seq = first_seq
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_loop(), name=f"logs:{self._run_id}")

    async def write(self, stream: LogStreamName, text: str, at_ns: int | None = None) -> None:
        """Buffer one line; `at_ns` is when it was written (default: now), e.g. a kubelet's timestamp."""
        while len(self._buffer) >= self._max_lines * 4 or self._buffered_bytes >= self._max_bytes * 4:
            self._room.clear()
            self._wake.set()
            await self._room.wait()
        self._buffer.append((self._next_seq, stream, text, time.time_ns() if at_ns is None else at_ns))
        self._buffered_bytes += len(text.encode()) + _LINE_OVERHEAD
        self._next_seq += 1
        if len(self._buffer) >= self._max_lines or self._buffered_bytes >= self._max_bytes:
            self._wake.set()

    async def close(self, end: LogEnd) -> None:
        """Publish what is buffered and then the end of the output (with the last lines, when they fit)."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
        batches = self._take_batches() or [[]]
        for batch in batches[:-1]:
            await self._publish(batch, None)
        await self._publish(batches[-1], end.model_copy(update={"total_lines": self._next_seq}))

    async def stop(self) -> None:
        """Publish what is buffered, without an end: another launcher carries the log on (a handoff)."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
        for batch in self._take_batches():
            await self._publish(batch, None)

    async def abandon(self) -> None:
        """Stop without publishing what is buffered: the run's lease, and with it its log, is another launcher's."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._buffer, self._buffered_bytes = [], 0

    def _take_batches(self) -> list[list[convert.BufferedLine]]:
        """Split the buffer into chunks within both caps, emptying it."""
        batches: list[list[convert.BufferedLine]] = []
        current: list[convert.BufferedLine] = []
        size = 0
        for line in self._buffer:
            cost = len(line[2].encode()) + _LINE_OVERHEAD
            if current and (len(current) >= self._max_lines or size + cost > self._max_bytes):
                batches.append(current)
                current, size = [], 0
            current.append(line)
            size += cost
        if current:
            batches.append(current)
        self._buffer, self._buffered_bytes = [], 0
        return batches

    async def _flush_loop(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._flush_interval)
            self._wake.clear()
            if self._closed:
                return
            for batch in self._take_batches():
                await self._publish(batch, None)
            self._room.set()

    async def _publish(self, lines: list[convert.BufferedLine], end: LogEnd | None) -> None:
        if not lines and end is None:
            return
        payload, msg_id = convert.log_chunk(self._run_id, self._attempt, lines, end)
        await publish_until_stored(self._js, self._subject, payload, msg_id=msg_id, attempts=self._publish_attempts)
