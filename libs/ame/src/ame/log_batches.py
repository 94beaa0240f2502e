"""Log lines in bulk: wire (proto) <-> domain and REST (JSON) forms, for thousands of lines at a time.

A chatty run prints tens of thousands of lines a second, and every follower and the archive handle each of them.
The per-line helpers in `ame.codecs` go through pydantic validation and protobuf's datetime helpers, which cost
more than everything else a follower does; these build the same values directly from the wire fields, whose
types the contract already guarantees.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from ame.contracts.log.v1 import log_pb2
from ame.domain import LogLine, LogStreamName

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STREAM_TO_PB: dict[str, log_pb2.LogStream.ValueType] = {
    "stdout": log_pb2.LOG_STREAM_STDOUT,
    "stderr": log_pb2.LOG_STREAM_STDERR,
    "system": log_pb2.LOG_STREAM_SYSTEM,
}
_STREAM_FROM_PB: dict[int, LogStreamName] = {
    log_pb2.LOG_STREAM_STDOUT: "stdout",
    log_pb2.LOG_STREAM_STDERR: "stderr",
    log_pb2.LOG_STREAM_SYSTEM: "system",
}
# json.dumps of one string, minus the call overhead (the C encoder). Non-ASCII is escaped, as json.dumps does by
# default: an SSE client that splits lines on U+2028 or U+0085 (Python's str.splitlines does) must not see one.
_quote = json.encoder.encode_basestring_ascii


def line_pb(seq: int, stream: LogStreamName, text: str, at_ns: int) -> log_pb2.LogLine:
    """One line on the wire; `at_ns` in nanoseconds since the epoch (time.time_ns())."""
    line = log_pb2.LogLine(seq=seq, stream=_STREAM_TO_PB[stream], text=text)
    line.at.seconds, line.at.nanos = divmod(at_ns, 1_000_000_000)
    return line


def lines_from_pb(lines: Iterable[log_pb2.LogLine]) -> list[LogLine]:
    """Domain lines, equal to `codecs.log_line_from_pb` of each (times truncated to microseconds)."""
    streams = _STREAM_FROM_PB
    out = []
    last_second = -1
    second = _EPOCH
    for pb in lines:
        at = pb.at
        if at.seconds != last_second:
            # Lines come many to a second; build that second's datetime once.
            last_second = at.seconds
            second = datetime.fromtimestamp(last_second, UTC)
        out.append(
            LogLine(
                seq=pb.seq,
                stream=streams.get(pb.stream, "stdout"),
                text=pb.text,
                at=second.replace(microsecond=at.nanos // 1000),
            )
        )
    return out


def lines_json(lines: Iterable[log_pb2.LogLine]) -> str:
    """A JSON array of the lines in their REST form: what `LogLine.model_dump(mode="json")` gives for each."""
    parts = []
    streams = _STREAM_FROM_PB
    quote = _quote
    last_second = -1
    prefix = ""
    for pb in lines:
        at = pb.at
        if at.seconds != last_second:
            # Lines come many to a second; format the date and time once per second.
            last_second = at.seconds
            prefix = (_EPOCH + timedelta(seconds=last_second)).strftime("%Y-%m-%dT%H:%M:%S")
        micros = at.nanos // 1000
        stamp = f"{prefix}.{micros:06d}Z" if micros else f"{prefix}Z"
        parts.append(
            f'{{"seq":{pb.seq},"stream":"{streams.get(pb.stream, "stdout")}","text":{quote(pb.text)},"at":"{stamp}"}}'
        )
    return "[" + ",".join(parts) + "]"
