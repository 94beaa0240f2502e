"""The only module of the logs service where generated contracts meet domain types."""

from __future__ import annotations

from ame import codecs
from ame.codecs import DecodeError
from ame.contracts.log.v1 import log_pb2
from ame.domain import LogEnd, LogLine, RunState

__all__ = ["DecodeError"]


def parse_chunk(data: bytes) -> tuple[str, int, list[LogLine], LogEnd | None]:
    chunk = codecs.parse_log_chunk(data)
    if not chunk.run_id:
        raise DecodeError("log chunk without a run id")
    end = codecs.log_end_from_pb(chunk.end) if chunk.HasField("end") else None
    return chunk.run_id, chunk.attempt, [codecs.log_line_from_pb(x) for x in chunk.lines], end


def lines_payload(lines: list[LogLine]) -> bytes:
    return log_pb2.LogChunk(lines=[codecs.log_line_to_pb(x) for x in lines]).SerializeToString()


def lines_from_payload(payload: bytes) -> list[LogLine]:
    return [codecs.log_line_from_pb(x) for x in codecs.parse_log_chunk(payload).lines]


def parse_history_request(data: bytes) -> tuple[str, int, int]:
    req = log_pb2.HistoryRequest()
    try:
        req.ParseFromString(data)
    except Exception as exc:
        raise DecodeError(f"undecodable history request: {exc}") from exc
    return req.run_id, req.from_seq, req.limit


def history_reply(*, attempt: int, lines: list[LogLine], end: LogEnd | None, has_more: bool, error: str = "") -> bytes:
    reply = log_pb2.HistoryReply(
        attempt=attempt, lines=[codecs.log_line_to_pb(x) for x in lines], has_more=has_more, error=error
    )
    if end is not None:
        reply.end.CopyFrom(codecs.log_end_to_pb(end))
    return reply.SerializeToString()


def end_from_archive(state: str, exit_code: int | None, reason: str, total_lines: int) -> LogEnd:
    return LogEnd(state=RunState(state), exit_code=exit_code, reason=reason, total_lines=total_lines)
