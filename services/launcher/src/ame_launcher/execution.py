"""Running a launched attempt and reporting its end: the execution half of the Launcher (launches.py).

The run's output goes to the bus as it comes; a local run is first placed on this host's GPUs (capacity.py). Its
end is reported only by the lease's holder (the fence in `_execute`), output first, then the state, then the
finished lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ame.domain import LogEnd, RunState
from ame_launcher.adoption import Active as _Active
from ame_launcher.backends import Adopter, RunResult
from ame_launcher.backends.orphans import ProcessPlace
from ame_launcher.capacity import Capacity
from ame_launcher.launcher_core import LauncherCore
from ame_launcher.logsink import ChunkPublisher
from ame_launcher.repositories import leases
from ame_platform.db import Connection

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class Execution(LauncherCore):
    """Provided by the Launcher (launches.py), besides what LauncherCore holds."""

    _capacity: Capacity
    _machine: ProcessPlace
    _active: dict[tuple[str, int], _Active]
    _slots: asyncio.Semaphore
    _handing_off: bool
    _handed: list[str]

    async def _execute(self, active: _Active) -> None:
        command = active.command
        output = ChunkPublisher(
            self._rt.js,
            self._rt.names.run_log(command.run_id),
            command.run_id,
            command.attempt,
            max_lines=self._settings.log_chunk_lines,
            flush_interval=self._settings.log_flush_interval,
            first_seq=active.first_seq,
        )
        output.start()
        if command.attempt > 1 and not active.adopted:
            # Followers show every attempt's output in turn; this says where one ends and the next begins.
            await output.write("system", f"ame: attempt {command.attempt} of {1 + command.spec.retries}")

        recording: asyncio.Task[None] | None = None

        async def record_process(pgid: int) -> None:
            async def update(conn: Connection) -> None:
                await leases.update_process(
                    conn,
                    run_id=command.run_id,
                    attempt=command.attempt,
                    host=self._machine.host,
                    boot_id=self._machine.boot_id,
                    pgid=pgid,
                )

            try:
                await self._with_db(update, what=f"recording the process of run {command.run_id}")
            except Exception:
                # Only a crashed launcher's orphans need it; the run goes on without.
                log.exception("could not record the process of run %s", command.run_id)

        running_published = False

        async def on_started(pgid: int | None) -> None:
            nonlocal recording, running_published
            if pgid is not None:
                if recording is not None and not recording.done():
                    recording.cancel()  # an in-run retry started a new process: only the newest one matters
                # Beside the run, not in its way: the runner reads no output until this returns.
                recording = asyncio.create_task(record_process(pgid), name=f"record:{command.run_id}")
            if not running_published:
                running_published = True
                await self._publish_state(command, RunState.RUNNING)

        try:
            if active.cancel.is_set() and not active.adopted:
                result = RunResult(RunState.CANCELLED, None, active.cancel_reason)
            elif active.adopted and isinstance(self._backend, Adopter):
                result = await self._backend.attach(command, output, active.cancel, on_started, active.resume_at_ns)
            else:
                result = await self._place_and_execute(active, output, on_started)
        except asyncio.CancelledError:
            if active.lease_lost:
                # Another launcher holds the lease and reads the log from where the bus has it: publish nothing.
                await output.abandon()
                self._active.pop((command.run_id, command.attempt), None)
                self._slots.release()
                return
            if not self._handing_off:
                raise
            # Handed to another launcher: what was read is published, the rest it reads again.
            await output.stop()
            self._handed.append(command.run_id)
            self._active.pop((command.run_id, command.attempt), None)
            self._slots.release()
            return
        except Exception as exc:
            log.exception("run %s failed in the launcher", command.run_id)
            result = RunResult(RunState.FAILED, None, f"launcher error: {exc}")
        if result.state == RunState.CANCELLED and active.cancel_reason:
            result = RunResult(result.state, result.exit_code, active.cancel_reason)
        active.finishing = True
        try:
            if recording is not None and not recording.done():
                # The process has ended: where it ran no longer matters, and a late update must not follow
                # the finish.
                recording.cancel()
                await asyncio.gather(recording, return_exceptions=True)

            async def renew(conn: Connection) -> bool:
                return await leases.renew_lease(
                    conn,
                    run_id=command.run_id,
                    attempt=command.attempt,
                    launcher_id=self.launcher_id,
                    ttl_seconds=self._settings.lease_ttl,
                )

            # The fence. Known held within half a TTL (a heartbeat or the claim), the lease is this launcher's
            # without asking the database, so a run's end is published during a database outage. Otherwise it
            # renews the lease first, as its holder only: another takes it over only after a further TTL.
            recent = (
                active.held_since is not None and time.monotonic() - active.held_since < self._settings.lease_ttl / 2
            )
            if active.lease_lost or (
                not recent and not await self._with_db(renew, what=f"renewing the lease of run {command.run_id}")
            ):
                log.warning(
                    "run %s attempt %d: its lease was taken over by another launcher, which reports its end",
                    command.run_id,
                    command.attempt,
                )
                await output.abandon()
                return
            # Output first, so that once the registry says the run ended its log is complete.
            await output.close(LogEnd(state=result.state, exit_code=result.exit_code, reason=result.reason))
            await self._publish_state(command, result.state, exit_code=result.exit_code, reason=result.reason)

            async def finish(conn: Connection) -> bool:
                return await leases.finish_lease(
                    conn,
                    run_id=command.run_id,
                    attempt=command.attempt,
                    launcher_id=self.launcher_id,
                    final_state=result.state.value,
                )

            # Held in hand (and heartbeated) until the database takes it: an unfinished lease would expire
            # and have a run that ended reported lost.
            if not await self._with_db(finish, what=f"finishing the lease of run {command.run_id}"):
                log.warning(
                    "run %s attempt %d: its lease was finished or taken over meanwhile", command.run_id, command.attempt
                )
        except Exception:
            # The lease stays active and expires; the reconciler then reports the run.
            log.exception("could not report the end of run %s", command.run_id)
        finally:
            self._active.pop((command.run_id, command.attempt), None)
            self._slots.release()

    async def _place_and_execute(
        self, active: _Active, output: ChunkPublisher, on_started: Callable[[int | None], Awaitable[None]]
    ) -> RunResult:
        """Refuse what this host can never run, wait for the GPUs (see capacity), then run on the backend."""
        command = active.command
        if self._backend.name != "local":
            # This host's GPUs and cpu are no measure of a cluster's: the cluster's scheduler places the pod.
            return await self._backend.execute(command, output, active.cancel, on_started)
        refusal = self._capacity.refusal(command.spec)
        if refusal is not None:
            await output.write("system", f"ame: {refusal}")
            return RunResult(RunState.FAILED, None, refusal)
        if note := self._capacity.note(command.spec):
            await output.write("system", f"ame: {note}")

        async def waiting(reason: str) -> None:
            await output.write("system", f"ame: {reason}")

        placement = await self._capacity.place(command.spec, active.cancel, waiting)
        if placement is None:
            return RunResult(RunState.CANCELLED, None, active.cancel_reason or "cancelled while waiting for GPUs")
        try:
            return await self._backend.execute(placement.apply(command), output, active.cancel, on_started)
        finally:
            placement.release()
