"""Object-store calls with a deadline each and retries with backoff: one policy for reading project files and for
writing artifacts, so a store that stalls or refuses ends the run with a reason instead of hanging it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ame_launcher.settings import LauncherSettings

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_MAX_DELAY = 10.0


def _always_retry(exc: Exception) -> Exception | None:
    return None


async def retrying(
    settings: LauncherSettings,
    action: Callable[[], Awaitable[_T]],
    *,
    what: str,
    gave_up: Callable[[int, str], Exception],
    permanent: Callable[[Exception], Exception | None] = _always_retry,
) -> _T:
    """`action()` under `AME_LAUNCHER_FETCH_TIMEOUT`, tried `AME_LAUNCHER_FETCH_ATTEMPTS` times with doubling
    backoff; `gave_up(tries, detail)` is raised when the tries run out. `permanent(exc)` names the error to raise
    at once for a fault no retry can mend (None: retry it)."""
    delay = settings.fetch_backoff
    for attempt in range(1, settings.fetch_attempts + 1):
        try:
            return await asyncio.wait_for(action(), timeout=settings.fetch_timeout)
        except Exception as exc:
            if (error := permanent(exc)) is not None:
                raise error from None
            detail = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            if attempt == settings.fetch_attempts:
                raise gave_up(attempt, detail) from None
            log.warning("%s failed (%s); retrying in %.1f s", what, detail, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)
    raise AssertionError("unreachable")
