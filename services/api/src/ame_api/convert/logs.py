"""Run logs: the end chunk the api writes for a run that never ran, follow requests and responses, the log
chunks read from the bus and the log service's history replies."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import TypeAdapter

from ame import codecs, log_batches
from ame.codecs import DecodeError
from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.log.v1 import log_pb2
from ame.domain import LogEnd, LogLine, RunState
from ame.domain.limits import LogSeq
from ame_api.convert.fields import checked
from ame_api.convert.runs import run_id_request

_LOG_SEQ: TypeAdapter[int] = TypeAdapter(LogSeq)


def end_chunk(run_id: str, attempt: int, state: RunState, exit_code: int | None, reason: str) -> bytes:
    end = codecs.log_end_to_pb(LogEnd(state=state, exit_code=exit_code, reason=reason))
    return log_pb2.LogChunk(run_id=run_id, attempt=attempt, end=end).SerializeToString()


def follow_request(request: ame_service_pb2.FollowLogsRequest) -> tuple[str, int]:
    return run_id_request(request.run_id), checked(_LOG_SEQ, request.from_seq, "from_seq")


class LineBatch:
    """Consecutive lines of one run attempt, kept in their wire form from the bus or the archive to the follower's
    client: a chatty run's followers pass tens of thousands of lines a second, and turning each into a domain
    LogLine and back cost more than everything else they do."""

    __slots__ = ("attempt", "lines")

    def __init__(self, attempt: int, lines: Sequence[log_pb2.LogLine]) -> None:
        self.attempt = attempt
        self.lines = lines

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def first_seq(self) -> int:
        return self.lines[0].seq

    @property
    def last_seq(self) -> int:
        return self.lines[-1].seq

    def since(self, seq: int) -> LineBatch:
        """The lines numbered `seq` and after."""
        if not self.lines or self.first_seq >= seq:
            return self
        return LineBatch(self.attempt, [line for line in self.lines if line.seq >= seq])

    def before(self, seq: int) -> LineBatch:
        """The lines numbered below `seq`."""
        if not self.lines or self.last_seq < seq:
            return self
        return LineBatch(self.attempt, [line for line in self.lines if line.seq < seq])

    def to_domain(self) -> list[LogLine]:
        return log_batches.lines_from_pb(self.lines)

    def to_json(self) -> str:
        """A JSON array of the lines in their REST form (LogLine's JSON)."""
        return log_batches.lines_json(self.lines)


def follow_end_pb(end: LogEnd) -> ame_service_pb2.FollowLogsResponse:
    return ame_service_pb2.FollowLogsResponse(end=codecs.log_end_to_pb(end))


def follow_chunk_pb(run_id: str, batch: LineBatch) -> ame_service_pb2.FollowLogsResponse:
    response = ame_service_pb2.FollowLogsResponse()
    response.chunk.run_id = run_id
    response.chunk.attempt = batch.attempt
    response.chunk.lines.extend(batch.lines)
    return response


def follow_lines_pb(batch: LineBatch) -> list[ame_service_pb2.FollowLogsResponse]:
    """One `line` event per line, for clients that did not ask for batches."""
    return [ame_service_pb2.FollowLogsResponse(line=line) for line in batch.lines]


def chunk_events(data: bytes) -> tuple[int, LineBatch, LogEnd | None]:
    chunk = codecs.parse_log_chunk(data)
    end = codecs.log_end_from_pb(chunk.end) if chunk.HasField("end") else None
    return chunk.attempt, LineBatch(chunk.attempt, chunk.lines), end


def history_request(run_id: str, from_seq: int) -> bytes:
    return log_pb2.HistoryRequest(run_id=run_id, from_seq=from_seq).SerializeToString()


def history_reply(data: bytes) -> tuple[LineBatch, LogEnd | None, bool]:
    reply = log_pb2.HistoryReply()
    reply.ParseFromString(data)
    if reply.error:
        raise DecodeError(reply.error)
    end = codecs.log_end_from_pb(reply.end) if reply.HasField("end") else None
    return LineBatch(reply.attempt, reply.lines), end, reply.has_more
