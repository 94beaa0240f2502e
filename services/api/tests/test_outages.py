"""Which failures the front doors answer with 503 / UNAVAILABLE rather than 500 / INTERNAL."""

from __future__ import annotations

import asyncpg
import nats.errors
import pytest

from ame_api.outages import is_transient


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.SerializationError("could not serialize access"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        ConnectionRefusedError(111, "Connect call failed"),
        OSError("Multiple exceptions: [Errno 111] Connect call failed, [Errno 99] Cannot assign"),
        TimeoutError(),  # asyncpg pool acquire, connect timeout
        nats.errors.NoServersError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_outages_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.UndefinedTableError('relation "runs" does not exist'),
        asyncpg.CharacterNotInRepertoireError("invalid byte sequence"),
        asyncpg.UniqueViolationError("duplicate key"),
        FileNotFoundError(2, "No such file"),
        PermissionError(13, "Permission denied"),
        ValueError("a bug"),
        RuntimeError("a bug"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_bugs_and_data_errors_are_not(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_an_outage_raised_as_the_cause_of_another_error_is_transient() -> None:
    wrapped = RuntimeError("could not load the run")
    wrapped.__cause__ = ConnectionResetError(104, "reset by peer")
    assert is_transient(wrapped)
    assert not is_transient(RuntimeError("could not load the run"))
