"""Runs whose work outlives the launcher that started it (pods): handed to other launchers and adopted by them.

A stopping launcher does not end such runs: it publishes the output it read and expires its leases at once.
A reconciler that finds an expired lease of a backend that adopts (`backends.Adopter`) asks whether the
attempt's work still exists; if so it takes the lease over inside the locked transaction (only one launcher
wins) and follows the work, its log carried on from the last line on the bus. Leases whose work is gone are
reported lost as before.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from nats.aio.subscription import Subscription
from nats.js.errors import NotFoundError

from ame_launcher import convert
from ame_launcher.backends import Adopter
from ame_launcher.launcher_core import LauncherCore
from ame_launcher.repositories import leases
from ame_platform.bus.consumer import PullConsumer
from ame_platform.db import Connection
from ame_platform.db.retry import with_connection
from ame_platform.lifecycle import Periodic

log = logging.getLogger(__name__)

# How long a stopping launcher tries to expire the leases of the runs it hands over.
_HAND_BACK_TIMEOUT = 10.0


@dataclass
class Active:
    command: convert.LaunchCommand
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_reason: str = ""
    task: asyncio.Task[None] | None = None
    # Set for a run this launcher adopted (its work outlived the launcher that started it): where its log stands.
    adopted: bool = False
    first_seq: int = 0
    resume_at_ns: int = 0
    # Set once its lease turned out to be another launcher's (this one stalled past the TTL and the run was
    # adopted or reported meanwhile): it stops following the run and reports nothing more.
    lease_lost: bool = False
    # Set once the run ended and its end is being reported: ownership is then settled by the fenced finish.
    finishing: bool = False
    # When (monotonic) this launcher last knew it held the lease, taken before the statement that told it: the
    # lease cannot expire, nor be taken over, within a TTL of it.
    held_since: float | None = None

    def request_cancel(self, reason: str) -> None:
        if not self.cancel.is_set():
            self.cancel_reason = reason
            self.cancel.set()


class Adoption(LauncherCore):
    """The handoff and adoption half of the Launcher (launches.py), which provides these attributes."""

    _active: dict[tuple[str, int], Active]
    _slots: asyncio.Semaphore
    _stopping: asyncio.Event
    _handing_off: bool
    _handed: list[str]
    _adoptions: set[asyncio.Task[None]]
    _consumer: PullConsumer
    _loops: list[Periodic]
    _cancel_sub: Subscription | None

    async def _execute(self, active: Active) -> None:
        raise NotImplementedError

    async def _cancel_requested(self, run_id: str) -> bool:
        raise NotImplementedError

    async def _hand_off(self) -> None:
        """Stop without ending the runs: their pods go on, and their leases are expired at once so that another
        launcher's reconciler adopts them (its log resumes where this one's stopped)."""
        self._stopping.set()
        self._handing_off = True
        await self._consumer.drain()
        for adoption in list(self._adoptions):
            adoption.cancel()
        await asyncio.gather(*self._adoptions, return_exceptions=True)
        tasks = [a.task for a in self._active.values() if a.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(loop.drain() for loop in self._loops))
        if self._handed:

            async def hand_back(conn: Connection) -> None:
                await leases.hand_back(conn, launcher_id=self.launcher_id, run_ids=self._handed)

            try:
                await asyncio.wait_for(
                    with_connection(self._rt.pool, hand_back, what="handing runs to other launchers"),
                    timeout=_HAND_BACK_TIMEOUT,
                )
            except Exception:
                # Their leases then expire within a TTL, and another launcher adopts them then.
                log.warning("could not hand back the leases of %d run(s)", len(self._handed), exc_info=True)
        if self._cancel_sub is not None:
            await self._cancel_sub.unsubscribe()
        await self._backend.close()

    async def _adoptable(self, lease: leases.ExpiredLease) -> convert.LaunchCommand | None:
        """The launch command of an expired lease's work that this launcher's backend can take over, or None when
        there is none (the lease is then reported lost). Only leases of this launcher's backend come here."""
        if not isinstance(self._backend, Adopter):
            return None
        try:
            return await self._backend.find(lease.run_id, lease.attempt)
        except Exception:
            # Not knowing is not "gone": report nothing, and look again on the next pass.
            log.warning("could not look for the work of run %s", lease.run_id, exc_info=True)
            raise

    def _adopt(self, command: convert.LaunchCommand, taken_at: float) -> None:
        key = (command.run_id, command.attempt)
        if key in self._active:
            return
        if self._stopping.is_set():
            # Taken over just as this launcher began to stop: the lease expires within a TTL and another adopts it.
            log.info("run %s attempt %d: not adopted, the launcher is stopping", command.run_id, command.attempt)
            return
        active = Active(command, adopted=True, held_since=taken_at)
        # In hand at once, so the heartbeat renews the lease just taken over.
        self._active[key] = active

        async def start() -> None:
            try:
                await self._slots.acquire()
            except BaseException:
                self._active.pop(key, None)
                raise
            try:
                active.first_seq, active.resume_at_ns = await self._log_position(command)
                if await self._cancel_requested(command.run_id):
                    active.request_cancel("cancelled by request")
            except BaseException:
                # The lease expires again, and a later pass (here or elsewhere) adopts the run then.
                self._active.pop(key, None)
                self._slots.release()
                raise
            log.info("run %s attempt %d: adopted", command.run_id, command.attempt)
            active.task = asyncio.create_task(self._execute(active), name=f"run:{command.run_id}")

        adoption = asyncio.create_task(start(), name=f"adopt:{command.run_id}")
        self._adoptions.add(adoption)
        adoption.add_done_callback(self._adoptions.discard)

    async def _log_position(self, command: convert.LaunchCommand) -> tuple[int, int]:
        """(next line number, time of the last line) of the attempt's log on the bus; (0, 0) when it has none."""
        try:
            raw = await self._rt.js.get_last_msg(self._rt.names.logs_stream, self._rt.names.run_log(command.run_id))
        except NotFoundError:
            return 0, 0
        return convert.last_logged(raw.data or b"", command.attempt) or (0, 0)
