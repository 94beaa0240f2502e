"""Following the main container's log into the run's log, across reconnects, each line once.

Lines come with the kubelet's timestamp (`timestamps=true`). After a dropped stream, or in a launcher that
adopted the pod, the log is asked for again from the last timestamp seen (`sinceTime`, which the API reads
to the second), and every line up to and including the last full timestamp seen is dropped. The runner numbers
its lines, so a jump in the numbers is a gap (the kubelet rotated those lines away): it is said in the log.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from ame.domain import LogStreamName
from ame_launcher.kubernetes.kubeapi import KubeApi
from ame_launcher.kubernetes.manifests import MAIN
from ame_launcher.logsink import ChunkPublisher

log = logging.getLogger(__name__)

_STREAMS: dict[str, LogStreamName] = {"o": "stdout", "e": "stderr", "s": "system"}


@dataclass
class LogPosition:
    """Where the run's log stands: the kubelet timestamp of the last line published and the runner's next seq."""

    timestamp_ns: int = 0
    timestamp: str = ""
    next_seq: int | None = None


def parse_timestamp(text: str) -> int:
    """RFC 3339 with up to nanoseconds ("2026-12-02T03:04:05.123456789Z") as ns since the epoch."""
    head, _, fraction = text.rstrip("Z").partition(".")
    seconds = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    digits = "".join(ch for ch in fraction if ch.isdigit())[:9].ljust(9, "0")
    return int(seconds) * 1_000_000_000 + int(digits)


def rfc3339(ns: int) -> str:
    seconds, fraction = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction:09d}Z"


def split_line(raw: str) -> tuple[str, int | None, LogStreamName, str]:
    """(timestamp, runner seq or None, stream, text) of one `timestamps=true` log line."""
    timestamp, _, rest = raw.partition(" ")
    seq_text, _, framed = rest.partition(" ")
    stream_key, _, text = framed.partition(" ")
    if seq_text.isdigit() and stream_key in _STREAMS and (framed[1:2] == " " or len(framed) == 1):
        return timestamp, int(seq_text), _STREAMS[stream_key], text
    # Not the runner's (a runner that could not start, an image without Python): the raw line.
    return timestamp, None, "stderr", rest


class LogFollower:
    def __init__(
        self,
        api: KubeApi,
        pod: str,
        output: ChunkPublisher,
        position: LogPosition,
        reconnect_delay: float,
    ) -> None:
        self._api = api
        self._pod = pod
        self._output = output
        self.position = position
        self._reconnect_delay = reconnect_delay
        self.reconnects = 0

    async def follow(self, ended: asyncio.Event) -> None:
        """Copy lines until the container has ended (`ended` set) and its log has been read to the end."""
        while True:
            since = self.position.timestamp or None
            try:
                async for raw in self._api.pod_log(self._pod, MAIN, follow=True, since_time=since):
                    await self._line(raw)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("log stream of %s interrupted (%s); resuming", self._pod, exc)
            else:
                if ended.is_set():
                    return
            self.reconnects += 1
            if ended.is_set():
                # One more read without follow picks up what was written before the container ended.
                await self._drain()
                return
            await asyncio.sleep(self._reconnect_delay)

    async def _drain(self) -> None:
        try:
            async for raw in self._api.pod_log(
                self._pod, MAIN, follow=False, since_time=self.position.timestamp or None
            ):
                await self._line(raw)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._output.write(
                "system",
                f"ame: the end of the pod's log could not be read: {exc}",
                self.position.timestamp_ns or None,
            )

    async def _line(self, raw: str) -> None:
        if not raw:
            return
        timestamp, seq, stream, text = split_line(raw)
        try:
            at = parse_timestamp(timestamp)
        except ValueError:
            at = 0
        if at and at <= self.position.timestamp_ns:
            return  # seen before this reconnect
        expected = self.position.next_seq
        if seq is not None and expected is not None and seq > expected:
            await self._output.write(
                "system",
                f"ame: {seq - expected} line(s) of output are missing: the kubelet no longer holds them",
                at or None,
            )
        if seq is not None:
            self.position.next_seq = seq + 1
        if at:
            self.position.timestamp_ns = at
            self.position.timestamp = timestamp
        # The kubelet's time travels with the line: a launcher that adopts the run resumes after it.
        await self._output.write(stream, text, at or None)
