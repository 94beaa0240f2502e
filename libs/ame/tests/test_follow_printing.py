"""`ame runs follow` prints a batch of lines to the right streams, in order, with AME's own lines marked."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ame.cli.remote_commands import _print_lines
from ame.domain import LogLine, LogStreamName

AT = datetime(2026, 1, 1, tzinfo=UTC)


def _line(seq: int, stream: LogStreamName, text: str) -> LogLine:
    return LogLine(seq=seq, stream=stream, text=text, at=AT)


def test_a_batch_goes_to_stdout_and_stderr_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    _print_lines(
        [
            _line(0, "stdout", "a"),
            _line(1, "stdout", "b"),
            _line(2, "stderr", "warn"),
            _line(3, "system", "setting up"),
            _line(4, "system", "ame: already marked"),
            _line(5, "stdout", "c"),
        ]
    )
    out, err = capsys.readouterr()
    assert out == "a\nb\nc\n"
    assert err == "warn\name: setting up\name: already marked\n"
