"""Assembling a history page from archived chunks: in order, from the asked line, no holes, within both caps."""

from __future__ import annotations

from ame.contracts.log.v1 import log_pb2
from ame.contracts.run.v1 import run_pb2
from ame_logs import convert


def _payload(first: int, count: int, text: str = "x") -> bytes:
    lines = [
        log_pb2.LogLine(seq=s, stream=log_pb2.LOG_STREAM_STDOUT, text=f"{text}{s}") for s in range(first, first + count)
    ]
    return log_pb2.LogChunk(lines=lines).SerializeToString()


def _seqs(page: convert.HistoryPage) -> list[int]:
    reply = log_pb2.HistoryReply.FromString(page.reply(attempt=1, end=None, has_more=False))
    return [line.seq for line in reply.lines]


def test_page_starts_inside_a_chunk_and_takes_whole_chunks_after() -> None:
    page = convert.HistoryPage(from_seq=5, max_lines=1000, max_bytes=1 << 20)
    assert page.add(_payload(0, 10))
    assert page.add(_payload(10, 10))
    assert _seqs(page) == list(range(5, 20))
    assert page.next_seq == 20
    assert not page.gap


def test_page_stops_at_a_hole_rather_than_skip_lines() -> None:
    page = convert.HistoryPage(from_seq=0, max_lines=1000, max_bytes=1 << 20)
    assert page.add(_payload(0, 10))
    assert not page.add(_payload(12, 10))
    assert page.gap
    assert _seqs(page) == list(range(10))


def test_page_skips_chunks_before_the_asked_line() -> None:
    page = convert.HistoryPage(from_seq=30, max_lines=1000, max_bytes=1 << 20)
    assert page.add(_payload(0, 10))
    assert page.add(_payload(30, 5))
    assert _seqs(page) == list(range(30, 35))


def test_page_is_cut_at_the_line_cap() -> None:
    page = convert.HistoryPage(from_seq=0, max_lines=15, max_bytes=1 << 20)
    assert page.add(_payload(0, 10))
    assert not page.add(_payload(10, 10))
    assert page.full
    assert _seqs(page) == list(range(15))
    assert page.next_seq == 15


def test_page_is_cut_at_the_byte_cap_but_always_holds_a_line() -> None:
    long_text = "y" * 5000
    page = convert.HistoryPage(from_seq=0, max_lines=1000, max_bytes=12_000)
    assert not page.add(_payload(0, 10, long_text))
    assert 1 <= len(_seqs(page)) <= 3
    assert _seqs(page) == list(range(len(_seqs(page))))
    reply = log_pb2.HistoryReply.FromString(page.reply(attempt=1, end=None, has_more=True))
    assert reply.ByteSize() <= 12_000 + 100

    tiny = convert.HistoryPage(from_seq=0, max_lines=1000, max_bytes=100)
    assert not tiny.add(_payload(0, 3, long_text))
    assert _seqs(tiny) == [0]


def test_archivable_chunk_keeps_only_the_lines() -> None:
    chunk = log_pb2.LogChunk(run_id="r", attempt=2, lines=[log_pb2.LogLine(seq=3, text="a"), log_pb2.LogLine(seq=4)])
    chunk.end.total_lines = 5
    chunk.end.state = run_pb2.RUN_STATE_SUCCEEDED
    parsed = convert.parse_chunk(chunk.SerializeToString())
    assert (parsed.run_id, parsed.attempt, parsed.first_seq, parsed.last_seq) == ("r", 2, 3, 4)
    assert parsed.end is not None
    assert parsed.end.total_lines == 5
    assert parsed.payload is not None
    stored = log_pb2.LogChunk.FromString(parsed.payload)
    assert [line.seq for line in stored.lines] == [3, 4]
    assert not stored.run_id
    assert not stored.HasField("end")
