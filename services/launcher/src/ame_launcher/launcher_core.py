"""What every half of the Launcher shares (launches.py): its identity, database retries and state events.

The Launcher is one object assembled from halves by inheritance (launches.py, execution.py, reconciling.py,
adoption.py); this base holds the state they all read and the helpers they all call, so each half names only
what is its own.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ame.domain import RunState
from ame_launcher import convert
from ame_launcher.backends import Backend
from ame_launcher.settings import LauncherSettings
from ame_platform.bus.publisher import publish_until_stored
from ame_platform.db import Connection
from ame_platform.db.retry import with_connection
from ame_platform.faults import is_transient
from ame_platform.runtime import Runtime

__all__ = ["LauncherCore"]

_T = TypeVar("_T")


class LauncherCore:
    """Set by the Launcher's constructor (launches.py)."""

    launcher_id: str
    _rt: Runtime
    _settings: LauncherSettings
    _backend: Backend
    _db_fault_at: float | None

    async def _with_db(self, action: Callable[[Connection], Awaitable[_T]], *, what: str) -> _T:
        async def note_fault(exc: BaseException) -> None:
            self._db_fault_at = time.monotonic()

        return await with_connection(self._rt.pool, action, what=what, on_fault=note_fault)

    def _db_fault(self, exc: BaseException) -> None:
        if is_transient(exc):
            self._db_fault_at = time.monotonic()

    async def _publish_state(
        self,
        command: convert.LaunchCommand,
        state: RunState,
        *,
        exit_code: int | None = None,
        reason: str = "",
        attempts: int | None = None,
    ) -> None:
        payload = convert.state_changed(
            command.run_id,
            command.attempt,
            state,
            launcher_id=self.launcher_id,
            project=command.spec.project,
            task=command.spec.task,
            exit_code=exit_code,
            reason=reason,
        )
        await publish_until_stored(
            self._rt.js,
            self._rt.names.run_state(state),
            payload,
            msg_id=convert.state_msg_id(command.run_id, command.attempt, state),
            attempts=attempts,
        )
