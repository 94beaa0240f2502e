"""Turning launch commands into runs: lease, launch, watch, report; plus cancels, heartbeats and reconciling.

A launch command can be delivered more than once (JetStream is at-least-once, and the api's outbox may
publish twice), so the first thing a launcher does is claim a lease on (run_id, attempt): only the launcher
whose insert wins executes the run. The command is acknowledged as soon as the lease is held — from then on
the lease, renewed by heartbeats, is what says the run is in hand. A lease that stops being renewed expires,
and the reconciler of any replica reports its run `lost` (a local process cannot be adopted by another
process), so no run stays `running` forever.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import NotFoundError

from ame.domain import LogEnd, RunState
from ame_launcher import convert
from ame_launcher.backends import Backend, RunResult
from ame_launcher.logsink import ChunkPublisher
from ame_launcher.repositories import leases
from ame_launcher.settings import LauncherSettings
from ame_platform.bus.consumer import ConsumerSpec, Poison, PullConsumer
from ame_platform.bus.publisher import headers_for
from ame_platform.bus.subjects import LAUNCHER_LAUNCH
from ame_platform.lifecycle import Periodic, Supervisor
from ame_platform.runtime import Runtime

log = logging.getLogger(__name__)

_SHUTDOWN_REASON = "the launcher stopped while the run was in progress"


@dataclass
class _Active:
    command: convert.LaunchCommand
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_reason: str = ""
    task: asyncio.Task[None] | None = None


class Launcher:
    name = "launcher"

    def __init__(self, runtime: Runtime, settings: LauncherSettings, backend: Backend) -> None:
        self._rt = runtime
        self._settings = settings
        self._backend = backend
        # Unique per process: a restarted launcher must not renew the leases its previous life held.
        self.launcher_id = f"{settings.lifecycle.instance_id}-{uuid.uuid4().hex[:8]}"
        self._active: dict[tuple[str, int], _Active] = {}
        self._slots = asyncio.Semaphore(settings.max_concurrent_runs)
        self._loops = [
            Periodic("lease-heartbeats", settings.heartbeat_interval, self.heartbeat),
            Periodic("lease-reconciler", settings.reconcile_interval, self.reconcile),
        ]
        self._cancel_sub: Subscription | None = None
        self._consumer = PullConsumer(
            runtime.js,
            ConsumerSpec(
                stream=runtime.names.commands_stream,
                durable=LAUNCHER_LAUNCH,
                filter_subject=runtime.names.run_launch,
                concurrency=min(settings.max_concurrent_runs, 64),
            ),
            self.handle_launch,
            name="launch",
            tracer=runtime.telemetry.tracer("ame_launcher"),
        )

    # Lifecycle -----------------------------------------------------------------------------------------

    async def start(self, supervisor: Supervisor) -> None:
        self._cancel_sub = await self._rt.nc.subscribe(self._rt.names.run_cancel_wildcard, cb=self._on_cancel)
        for loop in self._loops:
            await loop.start(supervisor)
        await self._consumer.start(supervisor)

    async def drain(self) -> None:
        await self._consumer.drain()
        # Local runs are children of this process and cannot outlive it: end them and report it.
        for active in list(self._active.values()):
            active.cancel_reason = _SHUTDOWN_REASON
            active.cancel.set()
        tasks = [a.task for a in self._active.values() if a.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(loop.drain() for loop in self._loops))
        if self._cancel_sub is not None:
            await self._cancel_sub.unsubscribe()

    @property
    def active_runs(self) -> int:
        return len(self._active)

    # Launching -----------------------------------------------------------------------------------------

    async def handle_launch(self, msg: Msg) -> None:
        try:
            command = convert.parse_launch(msg.data)
        except convert.DecodeError as exc:
            raise Poison(str(exc)) from exc
        await self._acquire_slot(msg)
        started = False
        try:
            if await self._cancel_requested(command.run_id):
                await self._report_unlaunched(command, RunState.CANCELLED, "cancelled before it was launched")
                return
            async with self._rt.pool.acquire() as conn:
                claimed = await leases.claim_lease(
                    conn,
                    run_id=command.run_id,
                    attempt=command.attempt,
                    launcher_id=self.launcher_id,
                    backend=self._backend.name,
                    project=command.spec.project,
                    task=command.spec.task,
                    ttl_seconds=self._settings.lease_ttl,
                )
            if not claimed:
                log.info("run %s attempt %d is already held; skipping", command.run_id, command.attempt)
                return
            await self._publish_state(command, RunState.LAUNCHING)
            active = _Active(command)
            self._active[(command.run_id, command.attempt)] = active
            active.task = asyncio.create_task(self._execute(active), name=f"run:{command.run_id}")
            started = True
        finally:
            if not started:
                self._slots.release()

    async def _acquire_slot(self, msg: Msg) -> None:
        # While every slot is busy, keep telling JetStream the command is in hand so it is not redelivered.
        while True:
            try:
                await asyncio.wait_for(self._slots.acquire(), timeout=10.0)
                return
            except TimeoutError:
                await msg.in_progress()

    async def _cancel_requested(self, run_id: str) -> bool:
        try:
            await self._rt.js.get_last_msg(self._rt.names.events_stream, self._rt.names.run_cancel_requested(run_id))
        except NotFoundError:
            return False
        return True

    async def _execute(self, active: _Active) -> None:
        command = active.command
        output = ChunkPublisher(
            self._rt.js,
            self._rt.names.run_log(command.run_id),
            command.run_id,
            command.attempt,
            max_lines=self._settings.log_chunk_lines,
            flush_interval=self._settings.log_flush_interval,
        )
        output.start()

        async def on_started() -> None:
            await self._publish_state(command, RunState.RUNNING)

        try:
            result = await self._backend.execute(command, output, active.cancel, on_started)
        except Exception as exc:
            log.exception("run %s failed in the launcher", command.run_id)
            result = RunResult(RunState.FAILED, None, f"launcher error: {exc}")
        if result.state == RunState.CANCELLED and active.cancel_reason:
            result = RunResult(result.state, result.exit_code, active.cancel_reason)
        try:
            # Output first, so that once the registry says the run ended its log is complete.
            await output.close(LogEnd(state=result.state, exit_code=result.exit_code, reason=result.reason))
            await self._publish_state(command, result.state, exit_code=result.exit_code, reason=result.reason)
            async with self._rt.pool.acquire() as conn:
                await leases.finish_lease(
                    conn, run_id=command.run_id, attempt=command.attempt, final_state=result.state.value
                )
        finally:
            self._active.pop((command.run_id, command.attempt), None)
            self._slots.release()

    async def _report_unlaunched(self, command: convert.LaunchCommand, state: RunState, reason: str) -> None:
        output = ChunkPublisher(self._rt.js, self._rt.names.run_log(command.run_id), command.run_id, command.attempt)
        await output.close(LogEnd(state=state, reason=reason))
        await self._publish_state(command, state, reason=reason)

    async def _publish_state(
        self,
        command: convert.LaunchCommand,
        state: RunState,
        *,
        exit_code: int | None = None,
        reason: str = "",
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
        await self._rt.js.publish(
            self._rt.names.run_state(state),
            payload,
            headers=headers_for(f"state:{command.run_id}:{command.attempt}:{state.value}"),
        )

    # Cancels, heartbeats, reconciling ------------------------------------------------------------------

    async def _on_cancel(self, msg: Msg) -> None:
        try:
            run_id, attempt, reason = convert.parse_cancel(msg.data)
        except convert.DecodeError:
            return
        for (active_id, active_attempt), active in self._active.items():
            if active_id == run_id and (attempt == 0 or attempt == active_attempt):
                active.cancel_reason = reason or "cancelled by request"
                active.cancel.set()

    async def heartbeat(self) -> None:
        if not self._active:
            return
        async with self._rt.pool.acquire() as conn:
            await leases.update_heartbeats(conn, launcher_id=self.launcher_id, ttl_seconds=self._settings.lease_ttl)

    async def reconcile(self) -> int:
        """Report runs whose launcher vanished as lost; returns how many were found."""
        async with self._rt.pool.acquire() as conn, conn.transaction():
            expired = await leases.claim_expired_leases(conn, limit=100)
            for lease in expired:
                reason = f"launcher {lease.launcher_id} stopped renewing its lease; a local process cannot be adopted"
                command = convert.LaunchCommand(
                    run_id=lease.run_id,
                    attempt=lease.attempt,
                    organisation="",
                    spec=_placeholder_spec(lease.project, lease.task),
                )
                await self._report_unlaunched(command, RunState.LOST, reason)
                await leases.finish_lease(
                    conn, run_id=lease.run_id, attempt=lease.attempt, final_state=RunState.LOST.value
                )
        return len(expired)


def _placeholder_spec(project: str, task: str) -> convert.RunSpec:
    # Only the names travel in the events of a run that is reported without being launched.
    return convert.RunSpec(project=project or "default", task=task or "adhoc", command="-")
