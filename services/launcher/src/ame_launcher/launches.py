"""Turning launch commands into runs: lease, launch, watch, report; plus cancels, heartbeats and reconciling.

A launch command can be delivered more than once (JetStream is at-least-once, and the api's outbox may
publish twice), so a launcher claims a lease on (run_id, attempt) first: only the launcher whose insert wins
executes the run. The command is acknowledged once the run is launched (lease held, `launching` published);
from then on the lease, renewed by heartbeats, is what says the run is in hand. A lease that stops being
renewed expires, and the reconciler of a replica of the same backend adopts its work (pods, see adoption.py) or
reports its run `lost` (a local process cannot be adopted by another process), so no run stays `running` forever.

Leases are fenced: a launcher that stalled past its TTL may find its run taken over. Its heartbeat then sees the
lease not renewed and it stops following the run, and it reports a run's end only while it still holds the lease
(known from a heartbeat within half a TTL, else renewed as holder first; finished by holder only), so the run's end
and log are published once, by its holder.

A run is registered as in hand before anything else, so a cancel that arrives at any point of the launch is
seen: either by the check of the run's cancel subject, or by the cancel subscription.

The database never decides a run's outcome. Claiming the lease, recording the process and finishing the lease
retry a passing database fault with backoff (the claim meanwhile tells JetStream the command is still in hand),
and recording the process happens beside the run rather than in its way. A claim whose response was lost is
claimed again by the same launcher, successfully. After this launcher has seen the database fail, its
reconciler waits a whole lease TTL before it reports anyone's lease expired, so every live launcher has had
its heartbeats in first; and it never reports the runs it holds itself.

The Launcher is assembled from its halves: the launch consumer, cancels and dead letters here; running an
attempt and reporting its end in execution.py; heartbeats and the reconciler in reconciling.py; handing runs
to other launchers and adopting them in adoption.py; what they all share (identity, database retries, state
events) in launcher_core.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TypeVar

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import NotFoundError

from ame.domain import RunState
from ame_launcher import convert
from ame_launcher.adoption import Active as _Active
from ame_launcher.backends import Adopter, Backend
from ame_launcher.backends.orphans import this_machine
from ame_launcher.capacity import Capacity
from ame_launcher.execution import Execution
from ame_launcher.reconciling import RECONCILE_PUBLISH_ATTEMPTS, Reconciling
from ame_launcher.repositories import leases
from ame_launcher.settings import LauncherSettings
from ame_platform.bus.consumer import ConsumerSpec, Poison, PullConsumer, Redeliver, keep_in_hand
from ame_platform.bus.subjects import LAUNCHER_LAUNCH
from ame_platform.db import Connection
from ame_platform.db.retry import with_connection
from ame_platform.faults import clean_text, is_transient
from ame_platform.lifecycle import Periodic, Supervisor
from ame_platform.runtime import Runtime

log = logging.getLogger(__name__)

_SHUTDOWN_REASON = "the launcher stopped while the run was in progress"
# How long a stopping launcher tries to give back a lease it claimed but did not start.
_RELEASE_TIMEOUT = 2.0

_T = TypeVar("_T")


class Launcher(Execution, Reconciling):
    name = "launcher"

    def __init__(self, runtime: Runtime, settings: LauncherSettings, backend: Backend) -> None:
        self._rt = runtime
        self._settings = settings
        self._backend = backend
        self._capacity = Capacity(settings)
        # Unique per process: a restarted launcher must not renew the leases its previous life held.
        self.launcher_id = f"{settings.lifecycle.instance_id}-{uuid.uuid4().hex[:8]}"
        self._active: dict[tuple[str, int], _Active] = {}
        self._slots = asyncio.Semaphore(settings.max_concurrent_runs)
        self._stopping = asyncio.Event()
        # Set while a stopping launcher hands its runs to the others (a backend whose work outlives it).
        self._handing_off = False
        self._handed: list[str] = []
        self._adoptions: set[asyncio.Task[None]] = set()
        self._machine = this_machine()
        # When this launcher last saw the database fail (monotonic); None: not since it started.
        self._db_fault_at: float | None = None
        self._loops = [
            Periodic("lease-heartbeats", settings.heartbeat_interval, self.heartbeat),
            Periodic("lease-reconciler", settings.reconcile_interval, self.reconcile),
            Periodic("cancel-recheck", settings.heartbeat_interval, self.recheck_cancels),
        ]
        self._reconnects_seen = 0
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
            deadletters=runtime.deadletters,
            on_dead_letter=self.fail_dead_lettered_launch,
            tracer=runtime.telemetry.tracer("ame_launcher"),
        )

    # Lifecycle -----------------------------------------------------------------------------------------

    async def start(self, supervisor: Supervisor) -> None:
        self._stopping.clear()  # started again after a restart
        # A launcher that starts (or restarts) cannot know whether the database was just away: leases of live
        # launchers may have expired meanwhile. Judge none before every live launcher had a TTL to renew.
        self._db_fault_at = time.monotonic()
        self._reconnects_seen = self._rt.nc.stats["reconnects"]
        self._cancel_sub = await self._rt.nc.subscribe(self._rt.names.run_cancel_wildcard, cb=self._on_cancel)
        for loop in self._loops:
            await loop.start(supervisor)
        await self._consumer.start(supervisor)

    async def drain(self) -> None:
        if isinstance(self._backend, Adopter):
            await self._hand_off()
            return
        # Stop first: launches waiting for a slot give their command back (another replica takes it), and
        # local runs — children of this process that cannot outlive it — are ended and reported.
        self._stopping.set()
        for active in list(self._active.values()):
            active.request_cancel(_SHUTDOWN_REASON)
        await self._consumer.drain()
        for active in list(self._active.values()):
            active.request_cancel(_SHUTDOWN_REASON)
        tasks = [a.task for a in self._active.values() if a.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(loop.drain() for loop in self._loops))
        if self._cancel_sub is not None:
            await self._cancel_sub.unsubscribe()
        await self._backend.close()

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
        key = (command.run_id, command.attempt)
        if key in self._active:
            self._slots.release()
            return  # a redelivery of a run this launcher is launching right now
        active = _Active(command)
        self._active[key] = active
        launched = False
        try:
            if await self._cancel_requested(command.run_id):
                active.request_cancel("cancelled before it was launched")
            claiming = time.monotonic()
            claimed = await self._claim(command, msg)
            active.held_since = claiming
            if not claimed:
                log.info("run %s attempt %d is held by another launcher; skipping", command.run_id, command.attempt)
                return
            try:
                if not active.cancel.is_set():
                    await self._publish_state(command, RunState.LAUNCHING)
                active.task = asyncio.create_task(self._execute(active), name=f"run:{command.run_id}")
                launched = True
            finally:
                if not launched:
                    await self._release_unstarted(command)
        finally:
            if not launched:
                self._active.pop(key, None)
                self._slots.release()

    async def _claim(self, command: convert.LaunchCommand, msg: Msg) -> bool:
        async def claim(conn: Connection) -> bool:
            return await leases.claim_lease(
                conn,
                run_id=command.run_id,
                attempt=command.attempt,
                launcher_id=self.launcher_id,
                backend=self._backend.name,
                project=command.spec.project,
                task=command.spec.task,
                ttl_seconds=self._settings.lease_ttl,
            )

        async def still_in_hand(exc: BaseException) -> None:
            self._db_fault_at = time.monotonic()
            # Without this JetStream would hand the command to another launcher while this one waits.
            await keep_in_hand(msg)

        try:
            return await with_connection(
                self._rt.pool,
                claim,
                what=f"claiming run {command.run_id}",
                stop=self._stopping,
                on_fault=still_in_hand,
            )
        except Exception as exc:
            if not is_transient(exc):
                raise
            # Stopping while the database is away: the claim may have committed unseen. Give it back so the
            # launcher that takes the command next is not told it is held by one that will never run it.
            await self._release_unstarted(command)
            raise Redeliver("the launcher is stopping") from exc

    async def _release_unstarted(self, command: convert.LaunchCommand) -> None:
        async def release(conn: Connection) -> None:
            await leases.release_unstarted(
                conn, run_id=command.run_id, attempt=command.attempt, launcher_id=self.launcher_id
            )

        try:
            await asyncio.wait_for(
                with_connection(self._rt.pool, release, what=f"releasing run {command.run_id}"),
                timeout=_RELEASE_TIMEOUT,
            )
        except Exception:
            # The lease then expires and the reconciler reports the run; nothing better is possible here.
            log.warning("could not give back the lease of run %s", command.run_id, exc_info=True)

    async def _acquire_slot(self, msg: Msg) -> None:
        # While every slot is busy, keep telling JetStream the command is in hand so it is not redelivered;
        # when this launcher is stopping, hand the command back instead.
        while True:
            if self._stopping.is_set():
                raise Redeliver("the launcher is stopping")
            try:
                await asyncio.wait_for(self._slots.acquire(), timeout=1.0)
            except TimeoutError:
                await keep_in_hand(msg)
                continue
            if self._stopping.is_set():
                self._slots.release()
                raise Redeliver("the launcher is stopping")
            return

    async def _cancel_requested(self, run_id: str) -> bool:
        try:
            await self._rt.js.get_last_msg(self._rt.names.events_stream, self._rt.names.run_cancel_requested(run_id))
        except NotFoundError:
            return False
        return True

    # Cancels and dead letters --------------------------------------------------------------------------

    async def _on_cancel(self, msg: Msg) -> None:
        try:
            run_id, attempt, reason = convert.parse_cancel(msg.data)
        except convert.DecodeError:
            return
        for (active_id, active_attempt), active in list(self._active.items()):
            if active_id == run_id and attempt in (0, active_attempt):
                active.request_cancel(reason or "cancelled by request")

    async def recheck_cancels(self) -> None:
        """After a reconnect, look up the cancel subjects of the runs in hand.

        The cancel subscription is core NATS: the client subscribes again on reconnect, but a cancel
        published while this launcher was disconnected never reaches it. The events stream keeps it.
        """
        reconnects = self._rt.nc.stats["reconnects"]
        if reconnects == self._reconnects_seen:
            return
        for (run_id, attempt), active in list(self._active.items()):
            if active.cancel.is_set():
                continue
            try:
                raw = await self._rt.js.get_last_msg(
                    self._rt.names.events_stream, self._rt.names.run_cancel_requested(run_id)
                )
            except NotFoundError:
                continue
            try:
                _, cancel_attempt, reason = convert.parse_cancel(raw.data or b"")
            except convert.DecodeError:
                continue
            if cancel_attempt in (0, attempt):
                active.request_cancel(reason or "cancelled by request")
        # Only once every run was checked: a failed pass (NATS away again) is retried on the next one.
        self._reconnects_seen = reconnects

    async def fail_dead_lettered_launch(self, msg: Msg, why: str) -> None:
        """A launch command no launcher could process ends its run `failed`, rather than leaving it queued.

        A permanent failure normally happens before a lease is claimed (a launched run is acknowledged), so no
        launcher holds the run; the attempt is recorded finished so that replaying the dead letter cannot
        execute it after all. An undecodable command names no run, and there is nothing to report.
        """
        try:
            command = convert.parse_launch(msg.data)
        except convert.DecodeError:
            return
        reason = clean_text(f"the launch command could not be processed: {why}", 1000)
        # A finished lease first: a replay of this dead letter must not execute a run already reported failed.
        try:
            await with_connection(
                self._rt.pool,
                lambda conn: leases.record_refused(
                    conn,
                    run_id=command.run_id,
                    attempt=command.attempt,
                    launcher_id=self.launcher_id,
                    backend=self._backend.name,
                    project=command.spec.project,
                    task=command.spec.task,
                ),
                what=f"recording the refused launch of run {command.run_id}",
                stop=self._stopping,
            )
        except Exception as exc:
            if is_transient(exc):
                raise
            # The same fault that refused the claim may refuse this record: the run is still reported.
            log.warning("run %s: could not record its refused launch: %s", command.run_id, exc)
        await self._publish_state(command, RunState.FAILED, reason=reason, attempts=RECONCILE_PUBLISH_ATTEMPTS)
