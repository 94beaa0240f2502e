"""Which failures mean "a dependency is away for now" rather than "this request or this code is wrong".

The front doors answer those with 503 + Retry-After (REST) or UNAVAILABLE (gRPC), so clients retry, where
any other unexpected error is a 500 / INTERNAL. The whole decision is the one predicate `is_transient`, so
that it can become a call to the platform's shared fault classifier without touching the front doors.
"""

from __future__ import annotations

import asyncpg
import nats.errors
import nats.js.errors

# The database is away or busy: connection lost or refused, server shutting down or starting, too many
# clients, a pool that could not hand out a connection in time, or a transaction to simply run again.
_DATABASE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, including a connection closed mid-operation
    asyncpg.InterfaceError,  # the client's connection is gone or unusable
    asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.AdminShutdownError,  # 57P01: terminated by the administrator or a fast shutdown
    asyncpg.CrashShutdownError,  # 57P02
    asyncpg.TooManyConnectionsError,  # 53300
    asyncpg.SerializationError,  # 40001
    asyncpg.DeadlockDetectedError,  # 40P01
)

# The broker is away: a cancel cannot be published now, later it can.
_BUS: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.errors.StaleConnectionError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
)

# Connecting failed (refused, reset, unreachable) or a wait for a connection timed out (pool acquire,
# connect timeout, publish ack). File errors are OSErrors too, but not outages: they stay 500s.
_NETWORK: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)


def _is_network_oserror(exc: BaseException) -> bool:
    # asyncio reports a failed connect to several addresses as a bare OSError("Multiple exceptions: ...").
    return type(exc) is OSError


def is_transient(exc: BaseException) -> bool:
    """True when the failure is an outage of a dependency that retrying later can get past."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        if isinstance(current, _DATABASE + _BUS + _NETWORK) or _is_network_oserror(current):
            return True
        current = current.__cause__
        seen += 1
    return False
