"""Bulk log-line conversions give exactly what the per-line codecs and the REST schema give."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from ame import codecs, log_batches
from ame.domain import LogLine

LINES = [
    LogLine(seq=0, stream="stdout", text="plain", at=datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)),
    LogLine(
        seq=1, stream="stderr", text='quotes " and \\ and \t tabs', at=datetime(2026, 1, 1, 0, 0, 0, 5, tzinfo=UTC)
    ),
    LogLine(seq=2, stream="system", text="ünïcødé ✓ 🚀", at=datetime(2026, 1, 1, 0, 0, 1, 999999, tzinfo=UTC)),
    LogLine(seq=3, stream="stdout", text="\x1b[31mcontrol\x00chars\r", at=datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)),
    LogLine(seq=4, stream="stdout", text="", at=datetime(2031, 7, 9, 23, 59, 59, 123456, tzinfo=UTC)),
]


def test_lines_json_is_the_rest_form_of_each_line() -> None:
    pbs = [codecs.log_line_to_pb(line) for line in LINES]
    assert json.loads(log_batches.lines_json(pbs)) == [line.model_dump(mode="json") for line in LINES]


def test_lines_json_of_no_lines_is_an_empty_array() -> None:
    assert log_batches.lines_json([]) == "[]"


def test_lines_from_pb_equal_the_per_line_codec() -> None:
    pbs = [codecs.log_line_to_pb(line) for line in LINES]
    assert log_batches.lines_from_pb(pbs) == [codecs.log_line_from_pb(pb) for pb in pbs] == LINES


@pytest.mark.parametrize("at_ns", [0, 1_767_225_600_000_000_000, 1_767_225_600_123_456_789])
def test_line_pb_keeps_the_time_to_the_nanosecond(at_ns: int) -> None:
    pb = log_batches.line_pb(7, "stderr", "text", at_ns)
    assert (pb.seq, pb.text) == (7, "text")
    assert pb.at.seconds * 1_000_000_000 + pb.at.nanos == at_ns
    line = log_batches.lines_from_pb([pb])[0]
    assert line.stream == "stderr"
    assert line == codecs.log_line_from_pb(pb)
