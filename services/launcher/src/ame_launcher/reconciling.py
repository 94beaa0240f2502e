"""Keeping leases honest: heartbeats renew the leases of the runs in hand, and the reconciler adopts or reports
`lost` the runs whose launcher stopped renewing theirs (the lease half of the Launcher, launches.py).

After this launcher has seen the database fail, its reconciler waits a whole lease TTL before it reports anyone's
lease expired, so every live launcher has had its heartbeats in first; and it never reports the runs it holds
itself.
"""

from __future__ import annotations

import logging
import time

from ame.domain import LogEnd, RunState
from ame_launcher import convert
from ame_launcher.adoption import Adoption
from ame_launcher.backends import Adopter
from ame_launcher.backends.orphans import ProcessPlace, kill_orphaned_group
from ame_launcher.logsink import ChunkPublisher
from ame_launcher.repositories import leases

log = logging.getLogger(__name__)

# Publishing from the reconciler holds row locks; give up after a few tries and retry on the next pass.
RECONCILE_PUBLISH_ATTEMPTS = 3


class Reconciling(Adoption):
    """Provided by the Launcher (launches.py), besides what Adoption and LauncherCore hold: its machine."""

    _machine: ProcessPlace

    async def heartbeat(self) -> None:
        """Renew the leases of the runs this launcher holds right now (and only those); stop following those whose
        lease another launcher took over."""
        held = [run_id for run_id, _ in self._active]
        if not held:
            return
        # Only runs whose lease was claimed (or taken over) before the renewal began can be judged by it.
        started = {key: a for key, a in self._active.items() if a.task is not None and not a.finishing}
        sent = time.monotonic()
        try:
            async with self._rt.pool.acquire() as conn:
                renewed = await leases.update_heartbeats(
                    conn, launcher_id=self.launcher_id, run_ids=held, ttl_seconds=self._settings.lease_ttl
                )
        except Exception as exc:
            self._db_fault(exc)
            raise
        for key in renewed:
            if (renewed_active := self._active.get(key)) is not None:
                renewed_active.held_since = sent
        for key, active in started.items():
            if key in renewed or self._active.get(key) is not active or active.finishing or active.lease_lost:
                continue
            log.warning(
                "run %s attempt %d: another launcher took its lease over; no longer following it", key[0], key[1]
            )
            active.lease_lost = True
            if isinstance(self._backend, Adopter):
                # Its work goes on under the new holder: stop following it, as a handoff does.
                if active.task is not None:
                    active.task.cancel()
            else:
                # A local process is this launcher's child: end it (its end is not reported, see _execute).
                active.request_cancel("its launcher lost the lease on the run")

    async def reconcile(self) -> int:
        """Report runs whose launcher vanished as lost; returns how many were reported."""
        try:
            return await self._reconcile()
        except Exception as exc:
            self._db_fault(exc)
            raise

    async def _reconcile(self) -> int:
        grace = self._settings.lease_ttl if self._settings.reconcile_grace is None else self._settings.reconcile_grace
        if self._db_fault_at is not None and time.monotonic() - self._db_fault_at < grace:
            # Leases expire during an outage, of live launchers too. Once the database is back, give every live
            # launcher a whole TTL to renew its own before judging any of them (a 5 s heartbeat within a 30 s TTL
            # means an outage long enough to expire a lease is always seen by this loop too).
            async with self._rt.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
            return 0
        if self._stopping.is_set():
            # A stopping launcher adopts nothing, so it must not judge the leases others just handed back.
            return 0
        held = [run_id for run_id, _ in self._active]
        began = time.monotonic()
        async with self._rt.pool.acquire() as conn, conn.transaction():
            if time.monotonic() - began > self._settings.reconcile_interval:
                # Getting a connection hung (a failover, a black-holed network) rather than failing: that was an
                # outage too, and live launchers have not renewed yet.
                self._db_fault_at = time.monotonic()
                return 0
            expired = await leases.claim_expired_leases(
                conn, limit=100, launcher_id=self.launcher_id, held=held, backend=self._backend.name
            )
            adopted: list[tuple[convert.LaunchCommand, float]] = []
            for lease in expired:
                if self._stopping.is_set():
                    break  # the rest stay active, for a launcher that stays
                adoptable = await self._adoptable(lease)
                if self._stopping.is_set():
                    break
                if adoptable is not None:
                    taking = time.monotonic()
                    if await leases.take_over(
                        conn,
                        run_id=lease.run_id,
                        attempt=lease.attempt,
                        launcher_id=self.launcher_id,
                        ttl_seconds=self._settings.lease_ttl,
                    ):
                        adopted.append((adoptable, taking))
                    continue
                reason = f"launcher {lease.launcher_id} stopped renewing its lease; " + (
                    f"the {self._backend.name} backend has no work of the attempt left to adopt"
                    if isinstance(self._backend, Adopter)
                    else "a local process cannot be adopted"
                )
                if lease.pgid is not None and kill_orphaned_group(
                    pgid=lease.pgid,
                    run_id=lease.run_id,
                    recorded=ProcessPlace(lease.host or "", lease.boot_id or ""),
                    here=self._machine,
                ):
                    reason += "; its processes were ended"
                command = convert.LaunchCommand(
                    run_id=lease.run_id,
                    attempt=lease.attempt,
                    organisation="",
                    spec=convert.placeholder_spec(lease.project, lease.task),
                )
                # Inside the transaction: if publishing fails, the lease stays active and the next pass retries.
                output = ChunkPublisher(
                    self._rt.js,
                    self._rt.names.run_log(command.run_id),
                    command.run_id,
                    command.attempt,
                    publish_attempts=RECONCILE_PUBLISH_ATTEMPTS,
                )
                await output.close(LogEnd(state=RunState.LOST, reason=reason, total_lines=0))
                await self._publish_state(command, RunState.LOST, reason=reason, attempts=RECONCILE_PUBLISH_ATTEMPTS)
                await leases.finish_lease(
                    conn,
                    run_id=lease.run_id,
                    attempt=lease.attempt,
                    launcher_id=lease.launcher_id,
                    final_state=RunState.LOST.value,
                )
        # The leases are this launcher's once the transaction committed: only then does it follow the runs.
        for command, taken_at in adopted:
            self._adopt(command, taken_at)
        return len(expired)
