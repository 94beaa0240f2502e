"""The only module of the logs service where generated contracts meet domain types.

Lines stay in their wire form from the bus to the archive and from the archive to a history reply: a chatty run
archives and replays tens of thousands of lines a second, and converting each line to a domain value and back
cost more than the database work.
"""

from __future__ import annotations

from dataclasses import dataclass

from ame import codecs
from ame.codecs import DecodeError
from ame.contracts.log.v1 import log_pb2
from ame.domain import LogEnd, RunState

__all__ = ["DecodeError"]


@dataclass(frozen=True)
class ArchivableChunk:
    run_id: str
    attempt: int
    # The chunk's lines as stored in the archive (a LogChunk with lines only); None when it has none.
    payload: bytes | None
    first_seq: int
    last_seq: int
    end: LogEnd | None


def parse_chunk(data: bytes) -> ArchivableChunk:
    chunk = codecs.parse_log_chunk(data)
    if not chunk.run_id:
        raise DecodeError("log chunk without a run id")
    end = codecs.log_end_from_pb(chunk.end) if chunk.HasField("end") else None
    run_id, attempt = chunk.run_id, chunk.attempt
    if not chunk.lines:
        return ArchivableChunk(run_id, attempt, None, 0, 0, end)
    first_seq, last_seq = chunk.lines[0].seq, chunk.lines[-1].seq
    chunk.ClearField("run_id")
    chunk.ClearField("attempt")
    chunk.ClearField("end")
    return ArchivableChunk(run_id, attempt, chunk.SerializeToString(), first_seq, last_seq, end)


class HistoryPage:
    """One history reply assembled from archived chunk payloads, in order, from `from_seq` on, without gaps and
    within both caps (lines, and bytes so that the reply fits in one NATS message)."""

    def __init__(self, from_seq: int, max_lines: int, max_bytes: int) -> None:
        self.next_seq = from_seq
        self.gap = False
        self._reply = log_pb2.HistoryReply()
        self._room_lines = max_lines
        self._room_bytes = max_bytes

    @property
    def full(self) -> bool:
        return self._room_lines <= 0 or self._room_bytes <= 0

    def __len__(self) -> int:
        return len(self._reply.lines)

    def add(self, payload: bytes) -> bool:
        """Take the chunk's lines that follow the page's last one; False once the page can take no more (full, or
        a hole in the archive: chunks are archived concurrently, so stop there rather than skip lines)."""
        lines = codecs.parse_log_chunk(payload).lines
        if not lines or lines[-1].seq < self.next_seq:
            return not self.full
        if lines[0].seq > self.next_seq:
            self.gap = True
            return False
        start = self.next_seq - lines[0].seq
        count = len(lines) - start
        if (
            lines[-1].seq - lines[0].seq == len(lines) - 1
            and count <= self._room_lines
            and len(payload) <= self._room_bytes
        ):
            # The usual case: numbered without holes and fitting whole; copy them in one call.
            self._reply.lines.extend(lines[start:] if start else lines)
            self._room_lines -= count
            self._room_bytes -= len(payload)
            self.next_seq = lines[-1].seq + 1
            return not self.full
        for line in lines[start:]:
            if line.seq != self.next_seq:
                self.gap = line.seq > self.next_seq
                if self.gap:
                    return False
                continue
            size = line.ByteSize() + 8
            if self.full or (size > self._room_bytes and len(self._reply.lines) > 0):
                self._room_lines = 0
                return False
            self._reply.lines.append(line)
            self._room_lines -= 1
            self._room_bytes -= size
            self.next_seq += 1
        return not self.full

    def reply(self, *, attempt: int, end: LogEnd | None, has_more: bool) -> bytes:
        self._reply.attempt = attempt
        self._reply.has_more = has_more
        if end is not None:
            self._reply.end.CopyFrom(codecs.log_end_to_pb(end))
        return self._reply.SerializeToString()


def parse_history_request(data: bytes) -> tuple[str, int, int]:
    req = log_pb2.HistoryRequest()
    try:
        req.ParseFromString(data)
    except Exception as exc:
        raise DecodeError(f"undecodable history request: {exc}") from exc
    return req.run_id, req.from_seq, req.limit


def history_error(error: str) -> bytes:
    return log_pb2.HistoryReply(error=error).SerializeToString()


def empty_history() -> bytes:
    return log_pb2.HistoryReply().SerializeToString()


def end_from_archive(state: str, exit_code: int | None, reason: str, total_lines: int) -> LogEnd:
    return LogEnd(state=RunState(state), exit_code=exit_code, reason=reason, total_lines=total_lines)
