"""PEACH task loops (seed 002): a thin front door on project versions, runs and the per-organisation queue.

A project's trigger version may hold `peach.yaml` or `peach.conf/*.yaml`. Activating it replaces the project's
rows in `peach_tasks` (each task with the run it becomes: the notebook's script under the pip executor). Each
loop, an organisation's own or the shared `metadata` loop, is one row in `peach_loops`, driven by whichever api
replica locks it (`FOR UPDATE SKIP LOCKED`), so exactly one driver acts on a loop at a time, however many
replicas run. A pass of the driver, under that lock: if the loop's current run has ended, record the execution
and move on; when the cycle is over and `AME_PEACH_MIN_CYCLE_INTERVAL` has passed on the platform clock since its
end, start the next cycle with the tasks the trigger versions declare then, so a new version takes effect at the
next cycle; commit the loop at the task to start. The run is submitted after that commit, holding no lock
(through admission, so the organisation's queue and the metadata loop's queue order it; the idempotency key
`peach:<owner>:<loop>:<cycle>:<position>` makes a submit repeated by any replica, or after a crash, return the
same run), and a second short transaction under the lock records it as the loop's current run. A run that
exceeds its timeout is ended `timed_out` by the launcher like any run, and the loop goes on. A pass that fails
on one loop is logged and the driver goes on to the others.

Passes are event-driven: the registry wakes the driver when it records a run's end; a poll every
`AME_PEACH_POLL_INTERVAL` covers ends applied by another replica and the minimum interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from ame.domain import TriggerKind
from ame.domain.loops import SUCCESS, LoopExecution, LoopsInfo, LoopTask, TaskState
from ame.domain.principals import Principal
from ame.domain.projects import ManifestEntry
from ame.peach.notebooks import NotebookError, task_script
from ame.peach.tasks import run_spec_for_peach_task
from ame.spec import SpecError
from ame.spec.peach import METADATA_LOOP, check_codops, is_peach_file, load_peach_texts
from ame_api import organisations
from ame_api.repositories import peach as repo
from ame_api.repositories.runs import NotFound
from ame_api.runs import Conflict, InvalidRequest, RunService
from ame_api.settings import PeachSettings
from ame_platform.clock import Clock
from ame_platform.db import Connection
from ame_platform.lifecycle import Supervisor
from ame_platform.runtime import Runtime

log = logging.getLogger(__name__)

ReadBlob = Callable[[str], Awaitable[bytes]]  # sha256 -> the blob's bytes
_MAX_NOTEBOOK_BYTES = 32 * 1024 * 1024


class PeachProblems(InvalidRequest):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def peach_files(files: Sequence[ManifestEntry]) -> list[ManifestEntry]:
    return [f for f in files if is_peach_file(f.path)]


async def _read_once(kept: dict[str, bytes], read: ReadBlob, sha256: str) -> bytes:
    if sha256 not in kept:
        kept[sha256] = await read(sha256)
    return kept[sha256]


async def tasks_of_version(
    read: ReadBlob,
    files: Sequence[ManifestEntry],
    *,
    organisation: str,
    project: str,
    version_id: str,
    version_label: str,
    settings: PeachSettings,
) -> list[repo.TaskRow]:
    """The PEACH tasks a version declares, each as the run the loop submits; PeachProblems lists what is wrong
    (`file:line:col: message` for the YAML, the notebook and cell for a notebook). [] without PEACH files."""
    found = peach_files(files)
    if not found:
        return []
    texts = {}
    for entry in found:
        try:
            texts[entry.path] = (await read(entry.sha256)).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise PeachProblems([f"{entry.path}:1:1: the file is not UTF-8 text"]) from None
    try:
        # Parsing and checking are CPU work on user-sized input: off the event loop, which serves every request.
        config = await asyncio.to_thread(load_peach_texts, texts)
        check_codops(config, organisation)
    except SpecError as error:
        raise PeachProblems([str(p) for p in error.problems]) from None
    by_path = {f.path: f for f in files}
    notebooks: dict[str, bytes] = {}  # several tasks of one notebook read it once
    rows: list[repo.TaskRow] = []
    problems: list[str] = []
    for task in config.tasks:
        notebook = by_path.get(task.notebook)
        if notebook is None or notebook.size > _MAX_NOTEBOOK_BYTES:
            problems.append(f"{task.file}: task {task.name!r}: notebook {task.notebook} is not in the version")
            continue
        try:
            script = await asyncio.to_thread(
                task_script,
                (await _read_once(notebooks, read, notebook.sha256)).decode("utf-8-sig", errors="replace"),
                task.notebook,
                task.method,
                full_notebook=task.full_notebook,
            )
            spec = run_spec_for_peach_task(
                task, script, project=project, project_version_id=version_id, spark_master=settings.spark_master
            )
        except NotebookError as exc:
            problems.append(f"{task.file}: task {task.name!r}: {exc}")
            continue
        unsupported = ""
        if task.executor == "spark" and not settings.spark_master:
            unsupported = "executor spark is not supported: this server has no Spark master (AME_PEACH_SPARK_MASTER)"
        owner = "" if task.loop == METADATA_LOOP else organisation
        rows.append(
            repo.TaskRow(
                project=project,
                task=task.name,
                loop_owner=owner,
                loop_name=task.loop_name,
                version_id=version_id,
                version_label=version_label,
                spec=spec,
                unsupported=unsupported,
            )
        )
    if problems:
        raise PeachProblems(problems)
    return rows


class LoopDriver:
    """The component that drives every loop this replica can lock (see the module's docstring)."""

    name = "peach-loops"

    def __init__(self, runtime: Runtime, settings: PeachSettings, runs: RunService, clock: Clock) -> None:
        self._rt = runtime
        self._settings = settings
        self._runs = runs
        self._clock = clock
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        runs.end_listeners.append(lambda _run_id: self.wake())

    def wake(self) -> None:
        self._wake.set()

    async def start(self, supervisor: Supervisor) -> None:
        self._stop.clear()
        self._task = supervisor.spawn(self.name, self._loop())

    async def drain(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                await self.drive_all()
            except Exception:
                log.warning("PEACH loops: pass failed; next in %.1fs", self._settings.poll_interval, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._settings.poll_interval)

    async def drive_all(self) -> None:
        async with self._rt.pool.acquire() as conn:
            keys = await repo.loop_keys(conn)
        for owner, name in keys:
            # One loop that keeps failing (a row it cannot read, the database refusing its writes) must not stop
            # the loops after it, other organisations' included; its next pass retries it.
            try:
                await self.drive(owner, name)
            except Exception:
                log.warning("PEACH loop %s/%s: pass failed", owner or "-", name, exc_info=True)

    async def drive(self, owner: str, name: str) -> None:
        """A pass over one loop. A run is submitted outside the loop's row lock (a submit commits on another
        connection and publishes): under the lock the loop's (cycle, position) is committed as the task to start,
        the submit follows (its idempotency key makes a repeat by any replica return the same run), and a second
        short locked transaction records the run, if the loop is still at that position."""
        started_cycle = False
        # Each round either ends the pass or moves the loop a position on; the bound only guards against a bug.
        for _ in range(10_000):
            intent, started = await self._advance(owner, name, may_start_cycle=not started_cycle)
            started_cycle = started_cycle or started
            if intent is None:
                return
            run_id, reason = await self._submit(intent)
            if not await self._record(intent, run_id, reason):
                return

    async def _advance(self, owner: str, name: str, *, may_start_cycle: bool) -> tuple[repo.LoopRow | None, bool]:
        """Under the loop's lock: record the end of its current run, skip tasks that cannot start here, start a
        cycle when due; the loop at the task to submit now (committed), or None; and whether a cycle started."""
        async with self._rt.pool.acquire() as conn, conn.transaction():
            loop = await repo.lock_loop(conn, loop_owner=owner, loop_name=name)
            if loop is None:
                return None, False  # another replica drives it right now
            before = loop
            now = self._clock.now()
            if loop.current_run_id is not None:
                end = await repo.run_end(conn, loop.current_run_id)
                if end is None:
                    return None, False
                state, reason, started_at, finished_at = end
                await repo.finish_execution(
                    conn,
                    loop,
                    status=state,
                    reason=reason,
                    started_at=started_at,
                    finished_at=finished_at or datetime.now(UTC),
                )
                loop = replace(loop, position=loop.position + 1, current_run_id=None)
            started_cycle = False
            intent = None
            while True:
                if loop.position < len(loop.plan):
                    item = loop.plan[loop.position]
                    if not item.unsupported and item.spec is not None:
                        intent = loop
                        break
                    await self._failed_start(conn, loop, item, item.unsupported or "the task has no run")
                    loop = replace(loop, position=loop.position + 1)
                    continue
                if loop.cycle > 0 and loop.cycle_ended_at is None:
                    loop = replace(loop, cycle_ended_at=now)
                    log.info("PEACH loop %s: cycle %d ended", name, loop.cycle)
                interval = timedelta(seconds=self._settings.min_cycle_interval)
                if (
                    started_cycle
                    or not may_start_cycle
                    or (loop.cycle_ended_at is not None and now < loop.cycle_ended_at + interval)
                ):
                    break
                plan = await repo.loop_tasks(conn, loop_owner=owner, loop_name=name)
                if not plan:
                    break
                loop = replace(
                    loop, cycle=loop.cycle + 1, plan=plan, position=0, cycle_started_at=now, cycle_ended_at=None
                )
                started_cycle = True
                log.info("PEACH loop %s: cycle %d starts with %d task(s)", name, loop.cycle, len(plan))
            if loop != before:
                await repo.save_loop(conn, loop)
            return intent, started_cycle

    async def _submit(self, loop: repo.LoopRow) -> tuple[str | None, str]:
        """Submit the task at the loop's position, holding no lock: (its run id, ''), or (None, why it could not
        start). Errors that a later pass may not meet (the database, the bus) propagate and the pass is retried."""
        item = loop.plan[loop.position]
        if item.spec is None:  # _advance returns only tasks with a run
            return None, "the task has no run"
        key = f"peach:{loop.loop_owner}:{loop.loop_name}:{loop.cycle}:{loop.position}"
        try:
            run = await self._runs.submit(
                Principal.trigger(item.organisation, "peach"),
                item.spec,
                trigger=TriggerKind.SCHEDULE,
                idempotency_key=key,
            )
        except (InvalidRequest, NotFound, Conflict) as exc:
            return None, f"could not start: {exc}"
        return run.id, ""

    async def _record(self, intent: repo.LoopRow, run_id: str | None, reason: str) -> bool:
        """Under the loop's lock (waited for: it is held only briefly), record what the submit gave if the loop
        is still where `intent` left it; True when the pass goes on (a failed start moved the loop on, or the
        run may have ended already)."""
        async with self._rt.pool.acquire() as conn, conn.transaction():
            loop = await repo.lock_loop(conn, loop_owner=intent.loop_owner, loop_name=intent.loop_name, wait=True)
            if loop is None or (loop.cycle, loop.position) != (intent.cycle, intent.position):
                return False  # another replica recorded this position's run (the same run, by its key) and went on
            if loop.current_run_id is not None:
                return False
            item = loop.plan[loop.position]
            if run_id is None:
                await self._failed_start(conn, loop, item, reason)
                await repo.save_loop(conn, replace(loop, position=loop.position + 1))
                return True
            # Executions are timed like runs (the launcher's real time, which the run's own start and end replace
            # when it ends); only the cycle interval is read on the platform clock, which tests may simulate.
            await repo.start_execution(
                conn, loop, item, run_id=run_id, status="running", reason="", at=datetime.now(UTC)
            )
            await repo.save_loop(conn, replace(loop, current_run_id=run_id))
            return True

    @staticmethod
    async def _failed_start(conn: Connection, loop: repo.LoopRow, item: repo.PlanItem, reason: str) -> None:
        now = datetime.now(UTC)
        await repo.start_execution(
            conn, loop, item, run_id=None, status="failed", reason=reason, at=now, finished_at=now
        )
        log.info("PEACH loop %s: task %s/%s not run: %s", loop.loop_name, item.project, item.task, reason)


def _duration(started: datetime | None, finished: datetime | None) -> float | None:
    if started is None or finished is None:
        return None
    return max(0.0, (finished - started).total_seconds())


class LoopService:
    """What `ame loops info` and `initialize_tasks_info()` show."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def info(
        self, principal: Principal, *, organisation: str | None = None, task: str | None = None, limit: int = 1000
    ) -> LoopsInfo:
        org = organisations.resolve(principal, organisation)
        async with self._rt.pool.acquire() as conn:
            declared = await repo.organisation_tasks(conn, organisation=org)
            positions = await repo.loop_positions(conn)
            history = await repo.executions(conn, organisation=org, task=task, limit=limit)
            counts = await repo.execution_counts(conn, organisation=org)
        states: dict[tuple[str, str], TaskState] = {}
        for plan, position, running in positions:
            for index, item in enumerate(plan):
                if item.organisation != org:
                    continue
                if index < position:
                    states[(item.project, item.task)] = "FINISHED"
                elif index == position and running:
                    states[(item.project, item.task)] = "RUNNING"
                else:
                    states[(item.project, item.task)] = "PENDING"
        executions = [
            LoopExecution(
                id=e.id,
                project=e.project,
                task=e.task,
                loop=e.loop_name,
                cycle=e.cycle,
                run_id=e.run_id,
                version=e.version_label,
                version_id=e.version_id,
                status=e.status,
                reason=e.reason,
                started_at=e.started_at,
                finished_at=e.finished_at,
                duration_seconds=_duration(e.started_at, e.finished_at),
            )
            for e in history
        ]
        last: dict[tuple[str, str], LoopExecution] = {}
        for e in executions:
            last[(e.project, e.task)] = e
        tasks = []
        for project, name, loop_name, label in declared:
            if task is not None and name != task:
                continue
            previous = last.get((project, name))
            successes, failures = counts.get((project, name), (0, 0))
            tasks.append(
                LoopTask(
                    project=project,
                    task=name,
                    loop=loop_name,
                    version=label,
                    state=states.get((project, name), "PENDING"),
                    last_status=previous.status if previous else "",
                    last_started_at=previous.started_at if previous else None,
                    last_duration_seconds=previous.duration_seconds if previous else None,
                    successes=successes,
                    failures=failures,
                )
            )
        return LoopsInfo(organisation=org, tasks=tasks, executions=executions)


__all__ = ["SUCCESS", "LoopDriver", "LoopService", "PeachProblems", "peach_files", "tasks_of_version"]
