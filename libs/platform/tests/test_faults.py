"""Which faults are retried without limit and which count towards dead-lettering; text made storable."""

from __future__ import annotations

import asyncpg
import nats.errors
import nats.js.errors
import pytest

from ame_platform.faults import Fault, Poison, classify, clean_text


def _pg(cls: type[asyncpg.PostgresError], sqlstate: str) -> asyncpg.PostgresError:
    exc = cls("boom")
    exc.sqlstate = sqlstate  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.InterfaceError("cannot perform operation: another operation is in progress"),
        _pg(asyncpg.exceptions.TooManyConnectionsError, "53300"),
        _pg(asyncpg.exceptions.CannotConnectNowError, "57P03"),
        _pg(asyncpg.exceptions.SerializationError, "40001"),
        _pg(asyncpg.exceptions.DeadlockDetectedError, "40P01"),
        _pg(asyncpg.exceptions.AdminShutdownError, "57P01"),
        _pg(asyncpg.exceptions.ReadOnlySQLTransactionError, "25006"),
        asyncpg.exceptions.InterfaceError("connection is closed"),
        ConnectionResetError("reset by peer"),
        ConnectionRefusedError(111, "Connect call failed"),
        OSError("Multiple exceptions: [Errno 111] Connect call failed, [Errno 99] Cannot assign"),
        nats.errors.NoServersError(),
        TimeoutError(),  # a pool acquire that timed out
        nats.errors.ConnectionClosedError(),
        nats.errors.NoRespondersError(),
        nats.js.errors.ServiceUnavailableError(),
        RuntimeError("wrapped").with_traceback(None),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient_faults(exc: BaseException) -> None:
    if type(exc) is RuntimeError:
        exc.__cause__ = OSError("connection refused")
    assert classify(exc) is Fault.TRANSIENT


@pytest.mark.parametrize(
    "exc",
    [
        _pg(asyncpg.exceptions.CharacterNotInRepertoireError, "22021"),
        _pg(asyncpg.exceptions.NumericValueOutOfRangeError, "22003"),
        _pg(asyncpg.exceptions.UniqueViolationError, "23505"),
        _pg(asyncpg.exceptions.CheckViolationError, "23514"),
        _pg(asyncpg.exceptions.ProgramLimitExceededError, "54000"),
        # Services refuse to start unmigrated: a statement that does not fit the schema is a bug.
        _pg(asyncpg.exceptions.UndefinedTableError, "42P01"),
        FileNotFoundError(2, "No such file"),
        asyncpg.exceptions.InterfaceError("the server expects 2 arguments for this query, 1 was passed"),
        asyncpg.exceptions.InterfaceError("pool is closed"),
        PermissionError(13, "Permission denied"),
        asyncpg.exceptions.DataError("invalid input for query argument $1"),
        Poison("undecodable"),
        KeyError("a bug"),
        ValueError("also a bug"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_permanent_faults(exc: BaseException) -> None:
    assert classify(exc) is Fault.PERMANENT


def test_clean_text_strips_nul_replaces_surrogates_and_caps() -> None:
    assert clean_text("bad\x00reason") == "badreason"
    assert clean_text("half \ud800 pair") == "half \ufffd pair"
    capped = clean_text("x" * 100, 10)
    assert len(capped) == 10 and capped.endswith("…")
    assert clean_text("two\nlines\r\n", single_line=True) == "two lines "
    # What comes out is storable: UTF-8 encodable, no NUL.
    clean_text("\ud83d\x00").encode("utf-8")
