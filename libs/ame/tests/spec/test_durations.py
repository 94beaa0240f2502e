from __future__ import annotations

import pytest

from ame.spec.durations import DurationError, format_duration, parse_duration_seconds


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90.0),
        ("90", 90.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("1d", 86400.0),
        ("500ms", 0.5),
        (2.5, 2.5),
    ],
)
def test_timeouts_accept_seconds_and_durations(value: object, seconds: float) -> None:
    assert parse_duration_seconds(value) == seconds


@pytest.mark.parametrize("value", ["0", 0, "-5", "5 minutes", "1h30", "8d", True, None, "m"])
def test_bad_timeouts_are_refused(value: object) -> None:
    with pytest.raises(DurationError):
        parse_duration_seconds(value)


@pytest.mark.parametrize("seconds", [5400.0, 30.0, 0.5, 86400.0, 1.5, 3661.0])
def test_formatted_durations_read_back(seconds: float) -> None:
    assert parse_duration_seconds(format_duration(seconds)) == seconds
