"""The admission step: which queued runs may launch now, under organisation, loop and server limits.

A submitted run is recorded `queued`; its launch command is written to the outbox (and so published) only once
admission admits it. Until then it waits in `admission_queue` with the reason as the run's `reason`. Admission
runs on submit (a run whose queue is empty is admitted in the submit's own transaction), when the registry
records a run's end (its slot frees), when limits change, and every `AME_ADMISSION_INTERVAL` as a safety net.
Each step holds one PostgreSQL advisory lock for its transaction, so the steps of every api replica are one
after another and no limit is ever exceeded, however many replicas admit at once.

Fairness: among the (organisation, loop) queues whose oldest run fits, the organisation whose last admission is
oldest goes first (round robin), and within a queue the oldest run goes first; a queue's oldest run that does not
fit (not enough GPUs) holds the runs behind it, so a large run is never starved by smaller ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass

from ame.domain import RunSpec
from ame.domain.quotas import OrganisationLimits, effective_timeout
from ame_api import convert
from ame_api.repositories import admission as repo
from ame_api.repositories.runs import NotFound
from ame_api.settings import AdmissionSettings
from ame_platform.bus.publisher import MSG_ID
from ame_platform.db import Connection
from ame_platform.runtime import Runtime

log = logging.getLogger(__name__)

__all__ = ["Admission", "LimitsView", "Outgoing", "Refused"]

# The reason of a run queued while the step that decides it has yet to run.
_ASKED = "waiting: for admission"


class Refused(ValueError):
    """A run admission can never admit as asked (422 / INVALID_ARGUMENT)."""


@dataclass(frozen=True)
class Outgoing:
    """A launch command written to the outbox by an admission, to publish once its transaction has committed."""

    outbox_id: int
    subject: str
    payload: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Submitted:
    """What a submit's transaction did: admitted the run (`outgoing` to publish) or queued it with `reason`;
    `decided` when that was decided under the lock (no step needed after commit)."""

    outgoing: list[Outgoing]
    reason: str
    decided: bool


@dataclass(frozen=True)
class LimitsView:
    organisation: str
    limits: OrganisationLimits
    runs_in_use: int
    gpus_in_use: int
    runs_waiting: int


class _Usage:
    """Slots held now, by (organisation, loop) and by organisation, as the step admits more."""

    def __init__(self, slots: list[repo.Slot]) -> None:
        self.runs: Counter[tuple[str, str]] = Counter()
        self.loop_runs: Counter[str] = Counter()
        self.gpus: Counter[str] = Counter()
        self.total = 0
        for slot in slots:
            self._add(slot.organisation, slot.loop, slot.runs, slot.gpus)

    @classmethod
    def of(cls, organisation: str, loop: str, standing: repo.Standing) -> _Usage:
        """Only what concerns one (organisation, loop), as a submit reads it."""
        usage = cls([])
        usage.runs[(organisation, loop)] = standing.group_runs
        usage.loop_runs[loop] = standing.loop_runs
        usage.gpus[organisation] = standing.organisation_gpus
        usage.total = standing.total
        return usage

    def _add(self, organisation: str, loop: str, runs: int, gpus: int) -> None:
        self.runs[(organisation, loop)] += runs
        self.loop_runs[loop] += runs
        self.gpus[organisation] += gpus
        self.total += runs

    def admit(self, organisation: str, loop: str, gpus: int) -> None:
        self._add(organisation, loop, 1, gpus)


class Admission:
    def __init__(self, runtime: Runtime, settings: AdmissionSettings) -> None:
        self._rt = runtime
        self._settings = settings
        # Steps asked for in this process and the newest one a finished step covered: callers that ask while a
        # step runs share the next one, so a burst of submits or ends costs a few steps, not one each.
        self._asked = 0
        self._covered = 0
        self._stepping = asyncio.Lock()

    # -- the edges call these --------------------------------------------------------------------------------

    def check_spec(self, spec: RunSpec) -> None:
        """Refuses a run naming a loop this server does not have."""
        if spec.loop and spec.loop not in self._settings.loops:
            known = ", ".join(sorted(self._settings.loops)) or "none"
            raise Refused(f"unknown loop {spec.loop!r}; this server's loops: {known}")

    async def on_submit(
        self,
        conn: Connection,
        *,
        run_id: str,
        organisation: str,
        spec: RunSpec,
        subject: str,
        command: bytes,
        headers: dict[str, str],
    ) -> Submitted:
        """In the submit's transaction, after the run row.

        Fast path: when the lock is free and no run waits anywhere (so none can be overtaken), decide here and,
        if the run fits, write its launch to the outbox in this transaction, as a step would. Otherwise queue
        the run with its launch command and the reason it would wait as things stand; `after_submit` then runs
        the step that admits it or tells the queue's head exactly why."""
        gpus = spec.resources.gpus or 0
        locked = await repo.try_lock_admission(conn)
        standing = await repo.get_standing(conn, organisation, spec.loop)
        limits = standing.limits
        _check_fits(organisation, gpus, limits)
        why = self._blocker(organisation, spec.loop, gpus, _Usage.of(organisation, spec.loop, standing), limits)
        decided = locked and not standing.anyone_waiting
        if why is None and decided:
            out = await self._admit(conn, run_id, organisation, spec.loop, gpus, subject, command, headers, limits)
            if out is not None:
                return Submitted([out], "", decided=True)
        if why is None:
            why = f"waiting: earlier runs of organisation {organisation} go first" if standing.waiting else _ASKED
        await repo.create_waiting(
            conn,
            run_id=run_id,
            organisation=organisation,
            loop=spec.loop,
            gpus=gpus,
            subject=subject,
            payload=command,
            headers=headers,
            reason=why,
        )
        return Submitted([], why, decided=decided)

    async def check_limits(self, conn: Connection, organisation: str, spec: RunSpec) -> None:
        """Refuses a run the organisation's limits can never admit (more GPUs than it may use), for a submit that
        parks the run before admission sees it (a run waiting for data sets)."""
        limits = (await repo.get_limits(conn, [organisation])).get(organisation)
        _check_fits(organisation, spec.resources.gpus or 0, limits)

    async def after_submit(self, run_id: str, submitted: Submitted) -> str:
        """After the submit's commit: publish what the fast path admitted, or run a step; return the run's reason
        ('' once admitted). A step that fails here is not the submit's failure: the run is recorded and the next
        step (at worst the tick) admits it."""
        if submitted.decided:
            await self.publish(submitted.outgoing)
            return submitted.reason
        try:
            await self.admit()
            async with self._rt.pool.acquire() as conn:
                return await repo.find_reason(conn, run_id)
        except Exception:
            log.warning("admission after submitting %s failed; the next step admits it", run_id, exc_info=True)
            return _ASKED

    async def release(self, conn: Connection, run_id: str) -> None:
        """In the transaction that records the run's end (or its cancel): free its slot, drop it from the queue.
        Then call `admit` after commit. No lock is needed: freeing only lowers what a concurrent step counts."""
        await repo.delete_admission(conn, run_id)

    async def admit(self) -> None:
        """Run an admission step that begins after this call; concurrent callers in this process share one."""
        self._asked += 1
        ticket = self._asked
        async with self._stepping:
            if self._covered >= ticket:
                return
            covers = self._asked
            async with self._rt.pool.acquire() as conn, conn.transaction():
                await repo.lock_admission(conn)
                outgoing = await self._step(conn)
            self._covered = covers
        await self.publish(outgoing)

    async def admit_quietly(self, what: str) -> None:
        try:
            await self.admit()
        except Exception:
            log.warning("admission after %s failed; the next step admits what waits", what, exc_info=True)

    async def publish(self, outgoing: list[Outgoing]) -> None:
        """After commit: publish the admitted launches now; what fails here the outbox relay publishes later."""
        sent = []
        for out in outgoing:
            try:
                await self._rt.js.publish(out.subject, out.payload, headers=out.headers, timeout=5.0)
            except Exception:
                log.warning("launch publish failed; the outbox relay will retry", exc_info=True)
                break
            sent.append(out.outbox_id)
        if sent:
            async with self._rt.pool.acquire() as conn:
                await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", sent)

    async def tick(self) -> None:
        """Safety net (every replica, periodically): free the slots of runs whose end was missed, then admit."""
        async with self._rt.pool.acquire() as conn:
            await repo.delete_ended(conn)
        await self.admit()

    async def set_limits(self, organisation: str, limits: OrganisationLimits) -> LimitsView:
        async with self._rt.pool.acquire() as conn:
            if not await repo.organisation_exists(conn, organisation):
                raise NotFound(f"organisation {organisation[:200]!r} not found")
            await repo.update_limits(conn, organisation, limits)
        # Raised limits admit at once rather than at the next end or tick.
        await self.admit()
        return await self.get_limits(organisation)

    async def get_limits(self, organisation: str) -> LimitsView:
        async with self._rt.pool.acquire() as conn:
            if not await repo.organisation_exists(conn, organisation):
                raise NotFound(f"organisation {organisation[:200]!r} not found")
            return await self._view(conn, organisation)

    # -- the step ---------------------------------------------------------------------------------------------

    async def _view(self, conn: Connection, organisation: str) -> LimitsView:
        limits = (await repo.get_limits(conn, [organisation])).get(organisation, OrganisationLimits())
        slots = [s for s in await repo.list_slots(conn) if s.organisation == organisation]
        return LimitsView(
            organisation=organisation,
            limits=limits,
            runs_in_use=sum(s.runs for s in slots if s.loop == ""),
            gpus_in_use=sum(s.gpus for s in slots),
            runs_waiting=await repo.count_waiting(conn, organisation),
        )

    def _blocker(
        self, organisation: str, loop: str, gpus: int, usage: _Usage, limits: OrganisationLimits | None
    ) -> str | None:
        """Why a run of `organisation` in `loop` needing `gpus` cannot be admitted now; None if it can."""
        if loop:
            spec = self._settings.loops.get(loop)
            if spec is not None and spec.concurrency is not None:
                held = usage.loop_runs[loop] if spec.shared else usage.runs[(organisation, loop)]
                if held >= spec.concurrency:
                    whose = "" if spec.shared else f" of organisation {organisation}"
                    return f"waiting: loop {loop}{whose} busy ({held}/{spec.concurrency})"
        elif limits is not None and limits.max_runs is not None:
            held = usage.runs[(organisation, "")]
            if held >= limits.max_runs:
                return f"waiting: organisation {organisation} at {held}/{limits.max_runs} concurrent runs"
        if gpus and limits is not None and limits.max_gpus is not None:
            used = usage.gpus[organisation]
            if used + gpus > limits.max_gpus:
                if gpus > limits.max_gpus:
                    return f"waiting: the run needs {gpus} GPUs; organisation {organisation} may use {limits.max_gpus}"
                return (
                    f"waiting: {used} of {limits.max_gpus} GPUs of organisation {organisation} in use "
                    f"(the run needs {gpus})"
                )
        if usage.total >= self._settings.max_active:
            return f"waiting: the server is at {usage.total}/{self._settings.max_active} active runs"
        return None

    async def _admit(
        self,
        conn: Connection,
        run_id: str,
        organisation: str,
        loop: str,
        gpus: int,
        subject: str,
        command: bytes,
        headers: dict[str, str],
        limits: OrganisationLimits | None,
    ) -> Outgoing | None:
        timeout = effective_timeout(None, self._settings.loops.get(loop) if loop else None, limits)
        payload = convert.with_timeout(command, timeout)
        if payload != command:
            # Retries relaunch from the stored command, so they keep the default timeout the first attempt got.
            await repo.set_launch_command(conn, run_id, payload)
        outbox_id = await repo.create_admission(
            conn,
            run_id=run_id,
            organisation=organisation,
            loop=loop,
            gpus=gpus,
            msg_id=headers.get(MSG_ID, f"launch:{run_id}:1"),
            subject=subject,
            payload=payload,
            headers=headers,
        )
        return Outgoing(outbox_id, subject, payload, headers) if outbox_id is not None else None

    async def _step(self, conn: Connection) -> list[Outgoing]:
        """Admit what fits, round robin across organisations; the caller holds the lock and commits."""
        heads = {(w.organisation, w.loop): w for w in await repo.list_heads(conn)}
        if not heads:
            return []
        usage = _Usage(await repo.list_slots(conn))
        organisations = {org for org, _ in heads}
        limits = await repo.get_limits(conn, organisations)
        turns = await repo.list_turns(conn, organisations)
        outgoing: list[Outgoing] = []
        reasons: dict[str, tuple[str, str]] = {}
        while heads:
            fits: list[repo.Waiting] = []
            for head in heads.values():
                why = (
                    self._blocker(head.organisation, head.loop, head.gpus, usage, limits.get(head.organisation))
                    if head.state == "queued"
                    else None
                )
                if why is None:
                    fits.append(head)
                else:
                    reasons[head.run_id] = (why, head.reason)
            if not fits:
                break
            head = min(fits, key=lambda w: (turns.get(w.organisation, 0), w.seq))
            # The run's row before its queue entry: the order a cancel or an end takes them in, so no deadlock.
            if head.state == "queued":
                out = await self._admit(
                    conn,
                    head.run_id,
                    head.organisation,
                    head.loop,
                    head.gpus,
                    head.subject,
                    head.payload,
                    head.headers,
                    limits.get(head.organisation),
                )
                if out is not None:
                    outgoing.append(out)
                    usage.admit(head.organisation, head.loop, head.gpus)
                    turns[head.organisation] = max(turns.values(), default=0) + 1
            await repo.delete_waiting(conn, head.run_id)
            following = await repo.find_next_waiting(conn, head.organisation, head.loop, head.seq)
            if following is None:
                del heads[(head.organisation, head.loop)]
            else:
                heads[(head.organisation, head.loop)] = following
        # Only queue heads are told anew; the runs behind them keep the reason they were queued with.
        await repo.update_reasons(
            conn,
            [(run_id, why) for run_id, (why, before) in reasons.items() if why != before and run_id in _ids(heads)],
        )
        return outgoing


def _ids(heads: dict[tuple[str, str], repo.Waiting]) -> set[str]:
    return {w.run_id for w in heads.values()}


def _check_fits(organisation: str, gpus: int, limits: OrganisationLimits | None) -> None:
    if limits is not None and limits.max_gpus is not None and gpus > limits.max_gpus:
        raise Refused(f"the run asks for {gpus} GPUs; organisation {organisation} may use at most {limits.max_gpus}")
