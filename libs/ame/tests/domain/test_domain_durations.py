"""Durations, one type for settings, `ame.yml` timeouts, run specs and the CLI: seconds or Go-style strings."""

from __future__ import annotations

import math

import pytest
from pydantic import BaseModel, ValidationError

from ame.domain.durations import Duration, DurationError, format_duration, parse_duration, parse_timeout
from ame.domain.limits import MAX_TIMEOUT_SECONDS


class _Settings(BaseModel):
    timeout: Duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("2d", 172_800.0),
        ("1m30s500ms", 90.5),
        ("1.5h", 5400.0),
        (" 45s ", 45.0),
        ("90", 90.0),
        ("2.5", 2.5),
        (90, 90.0),
        (2.5, 2.5),
        (0, 0.0),
        ("0s", 0.0),
    ],
)
def test_accepted_forms(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)
    assert _Settings(timeout=value).timeout == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["10 parsecs", "", "s", "1h30", "30sec", "5 minutes", "1w", "ms30", "1h-30m", "-5s", "abc"]
)
def test_rejects_unknown_forms_naming_the_accepted_ones(value: str) -> None:
    with pytest.raises(ValueError, match=r"invalid duration .*'30s'"):
        parse_duration(value)


@pytest.mark.parametrize("value", [-1, -0.5, "-5", "-0.001"])
def test_rejects_negatives(value: object) -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, False])
def test_rejects_bools_although_they_are_ints(value: bool) -> None:
    with pytest.raises(ValueError, match="number of seconds"):
        parse_duration(value)


@pytest.mark.parametrize("value", [None, [30], {"s": 30}, b"30s"])
def test_rejects_other_types(value: object) -> None:
    with pytest.raises(ValueError, match="number of seconds"):
        parse_duration(value)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", math.nan, math.inf, "1e999"])
def test_rejects_non_finite_values(value: object) -> None:
    with pytest.raises(ValueError, match="finite"):
        parse_duration(value)


def test_settings_report_a_bad_duration_as_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="10 parsecs"):
        _Settings(timeout="10 parsecs")
    with pytest.raises(ValidationError, match="negative"):
        _Settings(timeout=-3)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90.0), ("90", 90.0), ("30s", 30.0), ("5m", 300.0), ("1H30M", 5400.0), ("1d", 86400.0), ("500ms", 0.5)],
)
def test_timeouts_accept_seconds_and_durations(value: object, seconds: float) -> None:
    assert parse_timeout(value) == seconds


@pytest.mark.parametrize("value", ["0", 0, "0s", "-5", "5 minutes", "1h30", "8d", True, None, "m"])
def test_bad_timeouts_are_refused(value: object) -> None:
    with pytest.raises(DurationError):
        parse_timeout(value)


def test_the_timeout_limit_is_the_one_the_run_spec_holds() -> None:
    assert parse_timeout("7d") == MAX_TIMEOUT_SECONDS
    with pytest.raises(DurationError, match="7d maximum"):
        parse_timeout(MAX_TIMEOUT_SECONDS + 1)


@pytest.mark.parametrize("seconds", [5400.0, 30.0, 0.5, 86400.0, 1.5, 3661.0, 0.0])
def test_formatted_durations_read_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
