"""Orchestrations (seed 004): a thin front door on project versions, runs and schedules.

* An upload is a ZIP (checked by `ame.orchestration_archives`); its files become a version of the orchestration's
  own project (`orch-<id hex>`), stored as any pushed version is. A `requirements.txt` in a subdirectory is also
  placed at the version's root (the same blob), where the pip executor reads it.
* The version's environment is built by a packaging run (executor pip, a trivial command): the launcher's
  environment cache keys it by requirements and Python, so every task run of the version finds it built. The
  packaging run's state is the version's status; when it fails, the installer's reason is read once from its output.
  Its idempotency key is the version's id: a version recorded without its packaging run (the api stopped in
  between) gets it when the orchestration is next read, and a repeat is the same run.
* A task is `run_once` (one run) or `run_scheduled` (a row of the api's project_schedules in the orchestration's
  project, sent to the scheduler as any trigger version's set is). Its runs are those of (project, `task-<id hex>`).
  A task starts once its orchestration's packaging ended (the server waits up to AME_ORCHESTRATIONS_PACKAGING_WAIT,
  then refuses: ask again). Killing removes the schedule (a fire already on its way is dropped in its own submit
  transaction, see `RunService.apply_schedule_fired`; so is one of a deleted orchestration) and, with `cancel`,
  cancels the runs that have not ended.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import re
import shlex
import tempfile
import uuid
import zipfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

from croniter import croniter
from pydantic import ValidationError

from ame.bus_messages import ScheduleDef
from ame.domain import RunSpec, TriggerKind
from ame.domain.durations import DurationError, parse_timeout
from ame.domain.executors import ExecutorKind
from ame.domain.orchestrations import (
    NONE_SHOWN,
    ORCHESTRATION_LABEL,
    ORCHESTRATION_NAME_MAX_CHARS,
    ORCHESTRATION_TASK_LABEL,
    RUN_TOKEN_KEY,
    RUN_TOKEN_VAULT,
    Orchestration,
    OrchestrationStatus,
    OrchestrationTask,
    TaskKind,
    TaskRun,
    packaging_status,
    seed_word,
    states_for_word,
    task_status,
)
from ame.domain.principals import Principal
from ame.domain.projects import MODE_EXECUTABLE, MODE_FILE, ManifestEntry
from ame.domain.runs import EnvVar, ExecutorRef, SecretRef
from ame.domain.task_args import decode_task_args
from ame.orchestration_archives import (
    REQUIREMENTS,
    ArchiveError,
    ArchiveLimits,
    inspect_archive,
    is_executable,
    read_entry,
)
from ame_api.convert import LineBatch
from ame_api.follow import LogFollower
from ame_api.projects import ProjectService
from ame_api.repositories import orchestrations as repo
from ame_api.repositories import projects as projects_repo
from ame_api.repositories import schedules as schedules_repo
from ame_api.repositories.runs import NotFound
from ame_api.runs import InvalidRequest, RunService
from ame_api.schedules import Outboxed, publish_now, write_schedule_set
from ame_api.settings import ApiSettings
from ame_api.spooling import discard
from ame_api.version_checks import TooLarge
from ame_platform.db import Connection
from ame_platform.runtime import Runtime

log = logging.getLogger(__name__)

PACKAGING_TASK = "packaging"
_PACKAGING_COMMAND = "python -c \"import sys; print('environment ready: Python', sys.version.split()[0])\""
# The task's code runs as `python main.py` in main.py's directory, with the `ame` SDK importable: the runner names
# its own site directories (AME_SDK_SITE) and they are appended after the environment's own, so a requirement of
# the orchestration wins over the SDK's copy, and only when the interpreters match (compiled modules).
_BOOTSTRAP = (
    "import os, runpy, site, sys; "
    "d = os.environ.get('AME_SDK_SITE', ''); "
    "ok = d and os.environ.get('AME_SDK_PYTHON') == '%d.%d' % sys.version_info[:2]; "
    "[site.addsitedir(p) for p in d.split(os.pathsep) if ok and p]; "
    "sys.argv = ['main.py']; sys.path.insert(0, os.getcwd()); "
    "runpy.run_path('main.py', run_name='__main__')"
)
_LOG_LIMIT_LINES = 2000
_ERROR_LINE = re.compile(
    r"(?i)(error|because|no matching|could not|cannot|not find|unsatisfiable|no solution|not available|failed)"
)
_MAX_ERROR_CHARS = 2000
# How often a task start that waits for packaging looks again.
_PACKAGING_POLL_SECONDS = 0.5


def task_command(entry_dir: str) -> str:
    run = f"python -c {shlex.quote(_BOOTSTRAP)}"
    return f"cd {shlex.quote(entry_dir)} && {run}" if entry_dir else run


def packaging_error(lines: list[str], reason: str) -> str:
    """The installer's own words for why it failed (the lines naming the requirement), then the run's reason."""
    picked = [line.strip() for line in lines if _ERROR_LINE.search(line)][-6:]
    text = "\n".join([*picked, reason] if reason else picked) or "packaging failed"
    return text[-_MAX_ERROR_CHARS:]


def _check_name(name: str, what: str) -> str:
    if not name or len(name) > ORCHESTRATION_NAME_MAX_CHARS or not name.isprintable() or name != name.strip():
        raise InvalidRequest(
            f"{what} {name[:200]!r} must be 1-{ORCHESTRATION_NAME_MAX_CHARS} printable characters without "
            "leading or trailing spaces"
        )
    return name


def check_schedule(schedule: str) -> str:
    if len(schedule.split()) != 5 or not croniter.is_valid(schedule):
        raise InvalidRequest(
            f"schedule {schedule[:200]!r} is not a cron expression of five fields (minute hour day month weekday), "
            "such as '*/5 * * * *'"
        )
    return schedule


class OrchestrationService:
    def __init__(
        self,
        runtime: Runtime,
        settings: ApiSettings,
        projects: ProjectService,
        runs: RunService,
        follower: LogFollower,
    ) -> None:
        self._rt = runtime
        self._settings = settings
        self._projects = projects
        self._runs = runs
        self._follower = follower

    # Orchestrations

    async def upload(
        self, principal: Principal, *, name: str, file_name: str, chunks: AsyncIterator[bytes]
    ) -> Orchestration:
        org = principal.organisation
        name = _check_name(name, "orchestration name")
        file_name = _check_name(file_name, "file name") if file_name else NONE_SHOWN
        spool, sha = await self._spool(chunks)
        try:
            entries, plan_dir = await asyncio.to_thread(self._read_archive, spool)
            async with self._rt.pool.acquire() as conn:
                orchestration_id, project = await repo.ensure(conn, organisation=org, name=name)
            missing = set(await self._projects.find_missing(principal, "", project, [e for e, _ in entries]))
            for entry, info in entries:
                if entry.sha256 in missing:
                    missing.discard(entry.sha256)
                    await self._projects.upload_blob(
                        principal, "", project, entry.sha256, entry.size, _entry_chunks(spool, info)
                    )
        finally:
            discard(spool)
        manifest = [entry for entry, _ in entries]
        version, _ = await self._projects.commit(principal, "", project, manifest, spec_required=False)
        async with self._rt.pool.acquire() as conn:
            version_id = await repo.add_version(
                conn,
                orchestration_id=orchestration_id,
                project_version_id=version.id,
                filename=file_name,
                sha=sha,
                entry_dir=plan_dir,
            )
        await self._package(
            principal,
            orchestration_id=orchestration_id,
            project=project,
            project_version_id=version.id,
            version_id=version_id,
        )
        return await self.get(principal, orchestration_id)

    async def _package(
        self, principal: Principal, *, orchestration_id: str, project: str, project_version_id: str, version_id: str
    ) -> str:
        """Submit the version's packaging run (once: its key is the version's id) and record it; its id."""
        spec = RunSpec(
            project=project,
            task=PACKAGING_TASK,
            command=_PACKAGING_COMMAND,
            executor=ExecutorRef(kind=ExecutorKind.PIP),
            project_version_id=project_version_id,
            labels={ORCHESTRATION_LABEL: orchestration_id},
        )
        run = await self._runs.submit(
            principal, spec, trigger=TriggerKind.API, idempotency_key=f"orchestration-packaging:{version_id}"
        )
        async with self._rt.pool.acquire() as conn:
            await repo.set_packaging_run(conn, version_id=version_id, run_id=run.id)
        return run.id

    async def _spool(self, chunks: AsyncIterator[bytes]) -> tuple[Path, str]:
        limit = self._settings.orchestrations.max_zip_bytes
        spool_dir = self._settings.project_spool_dir
        if spool_dir is not None:
            spool_dir.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix="orchestration-", suffix=".zip", dir=spool_dir)
        path = Path(name)
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(handle, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise TooLarge(
                            f"the archive is over the server's limit of {limit} bytes "
                            "(AME_ORCHESTRATIONS_MAX_ZIP_BYTES)"
                        )
                    digest.update(chunk)
                    await asyncio.to_thread(out.write, chunk)
            if size == 0:
                raise InvalidRequest("the upload is empty; send a ZIP archive")
            return path, digest.hexdigest()
        except BaseException:
            discard(path)
            raise

    def _read_archive(self, spool: Path) -> tuple[list[tuple[ManifestEntry, zipfile.ZipInfo]], str]:
        limits = self._settings.orchestrations
        try:
            with zipfile.ZipFile(spool) as archive:
                plan = inspect_archive(
                    archive,
                    ArchiveLimits(max_files=limits.max_files, max_bytes=limits.max_bytes, max_ratio=limits.max_ratio),
                )
                entries: list[tuple[ManifestEntry, zipfile.ZipInfo]] = []
                for info in plan.files:
                    digest = hashlib.sha256()
                    size = 0
                    for chunk in read_entry(archive, info):
                        digest.update(chunk)
                        size += len(chunk)
                    mode = MODE_EXECUTABLE if is_executable(info) else MODE_FILE
                    entries.append(
                        (ManifestEntry(path=info.filename, mode=mode, sha256=digest.hexdigest(), size=size), info)
                    )
        except ArchiveError as exc:
            raise InvalidRequest(f"orchestration refused: {exc}") from None
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, zlib.error, ValueError) as exc:
            # Corrupt or unsupported data (a bad CRC, an unknown compression method, a broken deflate stream).
            raise InvalidRequest(f"orchestration refused: not a readable ZIP archive ({exc})") from None
        if plan.requirements is not None and plan.requirements != REQUIREMENTS:
            # The pip executor reads the project's root requirements.txt: the one file, placed there too.
            entry, info = next((e, i) for e, i in entries if e.path == plan.requirements)
            entries.append((entry.model_copy(update={"path": REQUIREMENTS}), info))
        return entries, plan.entry_dir

    async def _describe(self, principal: Principal, row: repo.OrchestrationRow) -> Orchestration:
        if not row.packaging_run_id:
            # Recorded without its packaging run (the api stopped in between, or the submit failed): submit it now.
            try:
                run_id = await self._package(
                    principal,
                    orchestration_id=row.id,
                    project=row.project,
                    project_version_id=row.project_version_id,
                    version_id=row.version_id,
                )
            except Exception:
                log.warning("orchestration %s: its packaging run could not be submitted", row.id, exc_info=True)
            else:
                row = dataclasses.replace(row, packaging_run_id=run_id)
        status = packaging_status(row.packaging_state)
        error = row.error
        if status is OrchestrationStatus.PACKAGING_FAILED and not error and row.packaging_run_id:
            error = packaging_error(await self._output(principal, row.packaging_run_id), row.packaging_reason)
            async with self._rt.pool.acquire() as conn:
                await repo.set_error(conn, version_id=row.version_id, error=error)
        return Orchestration(
            id=row.id,
            name=row.name,
            status=status,
            filename=row.filename,
            sha=row.sha,
            project=row.project,
            project_version_id=row.project_version_id,
            packaging_run_id=row.packaging_run_id,
            error=error,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    async def _output(self, principal: Principal, run_id: str) -> list[str]:
        lines: list[str] = []
        async for event in self._follower.follow(principal, run_id):
            if not isinstance(event, LineBatch):
                break  # the LogEnd
            lines.extend(line.text for line in event.lines)
            del lines[:-_LOG_LIMIT_LINES]
        return lines

    async def list_all(self, principal: Principal) -> list[Orchestration]:
        async with self._rt.pool.acquire() as conn:
            rows = await repo.list_orchestrations(conn, organisation=principal.organisation)
        return [await self._describe(principal, row) for row in rows]

    async def _find(self, principal: Principal, name_or_id: str) -> repo.OrchestrationRow:
        async with self._rt.pool.acquire() as conn:
            row = await repo.find_orchestration(conn, organisation=principal.organisation, name_or_id=name_or_id)
        if row is None:
            raise NotFound(f"orchestration {name_or_id[:200]!r} not found")
        return row

    async def get(self, principal: Principal, name_or_id: str) -> Orchestration:
        return await self._describe(principal, await self._find(principal, name_or_id))

    async def delete(self, principal: Principal, name_or_id: str) -> None:
        """Delete the orchestration and its tasks; its scheduled tasks stop (their runs stay in the history)."""
        row = await self._find(principal, name_or_id)
        async with self._rt.pool.acquire() as conn:
            tasks = [t for t in await repo.list_tasks(conn, organisation=row.organisation, killed_only=False)]
        for task in tasks:
            if task.orchestration_id == row.id and task.killed_at is None:
                await self.kill(principal, task.id)
        async with self._rt.pool.acquire() as conn:
            await repo.delete_orchestration(conn, organisation=row.organisation, orchestration_id=row.id)

    # Tasks

    async def start_task(
        self,
        principal: Principal,
        orchestration: str,
        *,
        name: str,
        json_args: str,
        timeout_seconds: float | None,
        schedule: str,
    ) -> OrchestrationTask:
        org = principal.organisation
        name = _check_name(name, "task name")
        if schedule:
            check_schedule(schedule)
        try:
            args = decode_task_args(json_args)
        except ValueError as exc:
            raise InvalidRequest(f"json_args is not JSON: {exc}") from None
        try:
            timeout = parse_timeout(timeout_seconds) if timeout_seconds else None
        except DurationError as exc:
            raise InvalidRequest(f"timeout refused: {exc}") from None
        row = await self._packaged(principal, orchestration)
        task_id = str(uuid.uuid4())
        run_task = f"task-{uuid.UUID(task_id).hex}"
        try:
            spec = RunSpec(
                project=row.project,
                task=run_task,
                command=task_command(row.entry_dir),
                executor=ExecutorRef(kind=ExecutorKind.PIP),
                args=args,
                # Lines reach `run.logs()` as they are printed, not when a pipe's buffer fills.
                environment=[EnvVar(key="PYTHONUNBUFFERED", value="1")],
                timeout_seconds=timeout,
                project_version_id=row.project_version_id,
                labels={ORCHESTRATION_LABEL: row.id, ORCHESTRATION_TASK_LABEL: task_id},
                # The run's own token for `ame.Client()` inside the task, minted when the run starts.
                secrets=[SecretRef(key=RUN_TOKEN_KEY, inject_as="AME_TOKEN", vault=RUN_TOKEN_VAULT)],
            )
        except ValidationError as exc:
            raise InvalidRequest(f"the task cannot run: {exc.errors()[0]['msg']}") from None
        kind = "scheduled" if schedule else "once"
        async with self._rt.pool.acquire() as conn, conn.transaction():
            await repo.add_task(
                conn,
                organisation=org,
                orchestration_id=row.id,
                version_id=row.version_id,
                name=name,
                kind=kind,
                schedule=schedule,
                project=row.project,
                task_id=task_id,
                run_task=run_task,
            )
            sent = None
            if schedule:
                sent = await self._send_schedules(
                    conn,
                    org=org,
                    project=row.project,
                    version_id=row.project_version_id,
                    add=ScheduleDef(task=run_task, cron=schedule, spec=spec),
                )
        if sent is not None:
            await publish_now(self._rt, sent)
        else:
            try:
                await self._runs.submit(principal, spec, trigger=TriggerKind.API)
            except BaseException:
                # No run was made: the task goes too, or it would be listed as started forever.
                async with self._rt.pool.acquire() as conn:
                    await repo.delete_task_without_runs(conn, organisation=org, task_id=task_id)
                raise
        return await self.get_task(principal, task_id)

    async def _packaged(self, principal: Principal, name_or_id: str) -> repo.OrchestrationRow:
        """The orchestration once its packaging has ended well (seed 004: run_once waits for it). Waits up to
        AME_ORCHESTRATIONS_PACKAGING_WAIT (under a client's usual deadline), then refuses: the client asks again."""
        wait = float(self._settings.orchestrations.packaging_wait)
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            row = await self._find(principal, name_or_id)
            described = await self._describe(principal, row)
            if described.status is OrchestrationStatus.READY:
                return row
            if described.status is OrchestrationStatus.PACKAGING_FAILED:
                raise InvalidRequest(
                    f"orchestration {row.name!r} failed packaging, so it cannot run; upload it again: {described.error}"
                )
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise InvalidRequest(
                    f"orchestration {row.name!r} is still packaging (its environment is being built) after {wait:g} s; "
                    "start the task again once it is ready (the SDK's run_once waits for that)"
                )
            await asyncio.sleep(min(_PACKAGING_POLL_SECONDS, left))

    async def _send_schedules(
        self,
        conn: Connection,
        *,
        org: str,
        project: str,
        version_id: str,
        add: ScheduleDef | None = None,
        remove: str | None = None,
    ) -> Outboxed:
        project_id = await projects_repo.find_project_id(conn, organisation=org, name=project)
        assert project_id is not None
        generation = await schedules_repo.next_generation(conn, project_id=project_id)
        if add is not None:
            await repo.add_schedule(conn, organisation=org, project=project, version_id=version_id, schedule=add)
        if remove is not None:
            await repo.remove_schedule(conn, organisation=org, project=project, run_task=remove)
        rows = await schedules_repo.for_project(conn, organisation=org, project=project)
        return await write_schedule_set(
            self._rt,
            conn,
            organisation=org,
            project=project,
            project_id=project_id,
            version_id=version_id,
            generation=generation,
            rows=rows,
        )

    def _task(self, row: repo.TaskRow) -> OrchestrationTask:
        kind = TaskKind.SCHEDULED if row.kind == "scheduled" else TaskKind.ONCE
        killed = row.killed_at is not None
        status = task_status(kind=kind, killed=killed, last_state=row.last_state, any_active=row.any_active)
        active = not killed and (kind is TaskKind.SCHEDULED or row.last_state is None or not row.last_state.terminal)
        return OrchestrationTask(
            id=row.id,
            name=row.name,
            orchestration_id=row.orchestration_id,
            orchestration=row.orchestration,
            kind=kind,
            schedule=row.schedule or NONE_SHOWN,
            last_run_status=seed_word(row.last_state),
            status=status,
            active=active,
            killed=killed,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    async def list_tasks(self, principal: Principal, *, killed: bool = False) -> list[OrchestrationTask]:
        async with self._rt.pool.acquire() as conn:
            rows = await repo.list_tasks(conn, organisation=principal.organisation, killed_only=killed)
        return [self._task(r) for r in rows]

    async def _find_task(self, principal: Principal, task_id: str) -> repo.TaskRow:
        async with self._rt.pool.acquire() as conn:
            row = await repo.get_task(conn, organisation=principal.organisation, task_id=task_id)
        if row is None:
            raise NotFound(f"task {task_id[:200]!r} not found")
        return row

    async def get_task(self, principal: Principal, task_id: str) -> OrchestrationTask:
        return self._task(await self._find_task(principal, task_id))

    async def kill(self, principal: Principal, task_id: str, *, cancel: bool = False) -> OrchestrationTask:
        """Stop the task's future runs: its schedule leaves the project's set. With `cancel`, its runs that have
        not ended are cancelled too; otherwise a running run finishes."""
        row = await self._find_task(principal, task_id)
        org = row.organisation
        sent = None
        async with self._rt.pool.acquire() as conn, conn.transaction():
            killed_now = await repo.kill_task(conn, organisation=org, task_id=row.id)
            if killed_now and row.kind == "scheduled":
                version = await conn.fetchval(
                    "SELECT project_version_id FROM orchestration_versions WHERE id = $1::uuid", row.version_id
                )
                sent = await self._send_schedules(
                    conn, org=org, project=row.project, version_id=str(version), remove=row.run_task
                )
        if sent is not None:
            await publish_now(self._rt, sent)
        if cancel:
            async with self._rt.pool.acquire() as conn:
                active = await repo.active_runs(conn, organisation=org, project=row.project, run_task=row.run_task)
            for run_id in active:
                await self._runs.cancel(principal, run_id, f"task {row.name!r} was killed")
        return await self.get_task(principal, row.id)

    async def task_runs(
        self, principal: Principal, task_id: str, *, status: str = "all", limit: int | None = None
    ) -> list[TaskRun]:
        try:
            states = states_for_word(status)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        if limit is not None and limit < 0:
            raise InvalidRequest("limit cannot be negative")
        row = await self._find_task(principal, task_id)
        async with self._rt.pool.acquire() as conn:
            runs = await repo.task_runs(
                conn,
                organisation=row.organisation,
                project=row.project,
                run_task=row.run_task,
                states=[s.value for s in states] if states is not None else None,
                limit=limit or 10_000,
            )
        return [
            TaskRun(
                task_id=row.id,
                run_id=r.run_id,
                status=seed_word(r.state),
                state=r.state,
                created_at=r.created_at,
                updated_at=r.updated_at,
            )
            for r in runs
        ]


async def _entry_chunks(spool: Path, info: zipfile.ZipInfo) -> AsyncIterator[bytes]:
    archive = await asyncio.to_thread(zipfile.ZipFile, spool)
    try:
        chunks = read_entry(archive, info)
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            yield chunk
    finally:
        archive.close()
