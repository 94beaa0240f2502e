"""Telling faults that pass from faults that never will, and cleaning text before it is stored.

Every retry decision in AME goes through `classify`:

* TRANSIENT: the infrastructure is away or busy (a lost or refused connection, NATS reconnecting or JetStream
  unavailable, PostgreSQL restarting or refusing connections, too many clients, a serialisation failure or
  deadlock, a pool acquire timeout). Retrying with backoff will succeed once it is back, however long that
  takes, so these never count towards a limit; the front doors answer them with 503 + Retry-After.
* PERMANENT: retrying the same input gives the same answer (SQLSTATE class 22 data exceptions, 23 integrity
  violations, 42 a statement that does not fit the schema, 54 program limits, an undecodable message, a file
  error, any unexpected exception: a bug does not fix itself). These count, and a message that keeps failing
  so is dead-lettered (and can be replayed once the cause is fixed).

An exception chained with `raise ... from cause` is transient when its cause is, so wrapping an error to add
context does not change how it is retried.
"""

from __future__ import annotations

import enum
import re

import asyncpg
import nats.errors
import nats.js.errors

from ame.domain.limits import MAX_STORED_REASON_CHARS

__all__ = ["Fault", "Poison", "classify", "clean_text", "is_transient"]


class Fault(enum.Enum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"


class Poison(Exception):
    """The message can never be processed (undecodable, or refers to nothing): it is dead-lettered at once."""


# Server errors a retry can get past: a connection exception (08), a transaction to simply run again
# (40: serialisation failure, deadlock), insufficient resources (53: too many clients), operator intervention
# (57: shutdown, starting up, a statement cancelled by a timeout), and 55000 "not currently accepting
# connections" (a database closed for a restart). Every other SQLSTATE is about what was sent: it is counted.
# Services refuse to start on an unmigrated schema, so a class 42 error is a bug, not a migration under way.
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57"})
# 25006: a write reached a primary that was just demoted (a failover under way).
_TRANSIENT_SQLSTATES = frozenset({"25006"})
_BROKEN_CONNECTION = ("connection is closed", "connection was closed", "another operation is in progress")
_NOT_ACCEPTING = "not currently accepting connections"

# The client library reports a lost or busy connection as an InterfaceError; these subclasses instead say
# that what we sent is wrong, which no retry fixes.
_PERMANENT_INTERFACE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.ClientConfigurationError,
    asyncpg.exceptions.UnsupportedClientFeatureError,
)

_TRANSIENT_NATS_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.NoRespondersError,
    nats.errors.NoServersError,
    nats.errors.TimeoutError,
    nats.errors.FlushTimeoutError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.ServerError,
    nats.js.errors.NoStreamResponseError,
)


def _classify_one(exc: BaseException) -> Fault | None:
    if isinstance(exc, Poison):
        return Fault.PERMANENT
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        if (
            sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
            or sqlstate in _TRANSIENT_SQLSTATES
            or (sqlstate == "55000" and _NOT_ACCEPTING in str(exc))
        ):
            return Fault.TRANSIENT
        return Fault.PERMANENT
    if isinstance(exc, _PERMANENT_INTERFACE_ERRORS):
        return Fault.PERMANENT
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        return Fault.TRANSIENT  # a pool failing to reset a connection the server has just closed
    if isinstance(exc, asyncpg.InterfaceError):
        # The client's word for a lost or broken connection; the rest of its InterfaceErrors (wrong argument
        # counts, a closed pool at shutdown) are mistakes of the caller that no retry fixes.
        text = str(exc)
        return Fault.TRANSIENT if any(m in text for m in _BROKEN_CONNECTION) else Fault.PERMANENT
    if isinstance(exc, _TRANSIENT_NATS_ERRORS):
        return Fault.TRANSIENT
    if isinstance(exc, nats.js.errors.APIError) and exc.code == 503:
        return Fault.TRANSIENT
    # ConnectionError covers refused and reset sockets; TimeoutError a pool acquire or a request that got no
    # answer in time (asyncio.TimeoutError is TimeoutError on 3.11); asyncio reports a failed connect to several
    # addresses as a bare OSError("Multiple exceptions: ..."). A file error is an OSError subclass too, and is
    # not an outage.
    if isinstance(exc, ConnectionError | TimeoutError) or type(exc) is OSError:
        return Fault.TRANSIENT
    return None


def classify(exc: BaseException) -> Fault:
    """TRANSIENT when retrying can succeed once the infrastructure is back, PERMANENT otherwise."""
    current: BaseException | None = exc
    for _ in range(16):  # a bound, in case of a cycle of causes
        if current is None:
            break
        fault = _classify_one(current)
        if fault is not None:
            return fault
        current = current.__cause__
    return Fault.PERMANENT


def is_transient(exc: BaseException) -> bool:
    return classify(exc) is Fault.TRANSIENT


_SURROGATES = re.compile("[\ud800-\udfff]")
_LINE_BREAKS = re.compile(r"[\r\n]+")
_ELLIPSIS = "…"


def clean_text(text: str, limit: int = MAX_STORED_REASON_CHARS, *, single_line: bool = False) -> str:
    """Text PostgreSQL and NATS headers accept: no NUL, lone surrogates replaced, at most `limit` characters.

    PostgreSQL refuses NUL in text (CharacterNotInRepertoireError) and UTF-8 cannot encode a lone surrogate;
    free text that arrives with either must still be storable, or the event carrying it could never be
    applied. `single_line` also folds line breaks into spaces (a NATS header value cannot hold them).
    """
    cleaned = _SURROGATES.sub("\ufffd", text.replace("\x00", ""))
    if single_line:
        cleaned = _LINE_BREAKS.sub(" ", cleaned)
    if len(cleaned) > limit:
        cleaned = cleaned[: max(0, limit - len(_ELLIPSIS))] + _ELLIPSIS
    return cleaned
