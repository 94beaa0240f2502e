"""`ame.Client()`: seed 004's orchestrations, tasks and task runs, with the seed's names, parameters and tables.

    import ame

    wl = ame.Client()
    orchestration = wl.upload_orchestration(path="hello.zip")
    task = orchestration.run_once(name="hello once", json_args={"dogs": 3.9})
    wl.list_tasks()
    task.last_runs()[0].logs(limit=5)

Inside a task, `wl.in_task()` and `wl.task_args()` (or `ame.in_task()` / `ame.task_args()`) read the run's
arguments, and `ame.Client()` reaches the server with the run's own token. Everything here is a thin layer over
the gRPC client (`self.api`, `ame.sdk.client.Client`): orchestrations are project versions, tasks are runs and
schedules. The status words are the seed's, from `ame.domain.orchestrations.seed_word`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from pydantic import JsonValue

from ame.domain import orchestrations as domain
from ame.domain.orchestrations import NONE_SHOWN, OrchestrationStatus, TaskStatus
from ame.sdk.client import Client as GrpcClient
from ame.sdk.errors import PackagingFailed
from ame.sdk.tables import html_table, seed_time, short_sha, text_table
from ame.task_arguments import in_task, task_args

__all__ = ["Client", "Orchestration", "Task", "TaskRun"]

_CHUNK = 1 << 20
_POLL_SECONDS = 0.25
# How long run_once / run_scheduled wait for an orchestration still packaging (a large environment builds slowly).
PACKAGING_WAIT_SECONDS = 3600.0


class _Table:
    """Prints as the seed's table: HTML in a notebook, aligned text in a terminal."""

    def _table(self) -> tuple[list[str], list[list[str]]]:
        raise NotImplementedError

    def _repr_html_(self) -> str:
        return html_table(*self._table())

    def __str__(self) -> str:
        return text_table(*self._table())

    def __repr__(self) -> str:
        return str(self)


class Orchestration(_Table):
    """One orchestration: its newest upload's status, file and sha; `run_once` and `run_scheduled` make tasks."""

    def __init__(self, client: Client, record: domain.Orchestration) -> None:
        self._client = client
        self.record = record

    id = property(lambda self: self.record.id)
    name = property(lambda self: self.record.name)
    filename = property(lambda self: self.record.filename)
    sha = property(lambda self: self.record.sha)
    created_at = property(lambda self: self.record.created_at)
    updated_at = property(lambda self: self.record.updated_at)
    error = property(lambda self: self.record.error)

    def status(self) -> str:
        """pending_packaging, ready or packaging_failed (asked of the server now)."""
        self.record = self._client.api.get_orchestration(self.record.id)
        return self.record.status.value

    def wait_for_packaging(self, timeout: float = PACKAGING_WAIT_SECONDS) -> Self:
        """Wait while the environment is being built; PackagingFailed (naming the requirement) if it failed."""
        deadline = time.monotonic() + timeout
        while self.status() == OrchestrationStatus.PENDING_PACKAGING:
            if time.monotonic() > deadline:
                raise TimeoutError(f"orchestration {self.name!r} is still packaging after {timeout:.0f} s")
            time.sleep(_POLL_SECONDS)
        if self.record.status is OrchestrationStatus.PACKAGING_FAILED:
            raise PackagingFailed(f"orchestration {self.name!r} failed packaging: {self.record.error}")
        return self

    def run_once(self, name: str, json_args: JsonValue, timeout: int | None = None) -> Task:
        """A Temporary Run: one run of the orchestration with `json_args` (read back with `ame.task_args()`)."""
        return self._start(name, json_args, timeout, "")

    def run_scheduled(
        self, name: str, schedule: str | Sequence[str], json_args: JsonValue, timeout: int | None = None
    ) -> Task:
        """A Scheduled Run: a run every time the cron `schedule` fits (e.g. '*/5 * * * *'), until killed."""
        if not isinstance(schedule, str):
            # The seed writes `schedule={'42 * * * *'}`, a one-element set.
            values = list(schedule)
            if len(values) != 1 or not isinstance(values[0], str):
                raise ValueError("schedule is one cron expression, such as '*/5 * * * *'")
            schedule = values[0]
        return self._start(name, json_args, timeout, schedule)

    def _start(self, name: str, json_args: JsonValue, timeout: int | None, schedule: str) -> Task:
        self.wait_for_packaging()
        record = self._client.api.start_orchestration_task(
            self.record.id, name=name, json_args=json.dumps(json_args), timeout=timeout, schedule=schedule
        )
        return Task(self._client, record)

    def delete(self) -> None:
        self._client.api.delete_orchestration(self.record.id)

    def _table(self) -> tuple[list[str], list[list[str]]]:
        return ["Field", "Value"], [
            ["ID", self.id],
            ["Name", self.name],
            ["Status", self.record.status.value],
            ["Filename", self.filename],
            ["SHA", short_sha(self.sha)],
            ["Created At", seed_time(self.created_at)],
            ["Updated At", seed_time(self.updated_at)],
        ]


class Task(_Table):
    def __init__(self, client: Client, record: domain.OrchestrationTask) -> None:
        self._client = client
        self.record = record

    id = property(lambda self: self.record.id)
    name = property(lambda self: self.record.name)
    last_run_status = property(lambda self: self.record.last_run_status)
    type = property(lambda self: self.record.kind.value)
    active = property(lambda self: self.record.active)
    schedule = property(lambda self: self.record.schedule)
    created_at = property(lambda self: self.record.created_at)
    updated_at = property(lambda self: self.record.updated_at)

    def status(self) -> str:
        """started, pending_kill, killed, success or failure (asked of the server now)."""
        self.record = self._client.api.get_orchestration_task(self.record.id)
        return self.record.status.value

    def kill(self, cancel: bool = False) -> TaskStatus:
        """Stop the task's future runs. A run under way finishes, unless `cancel` is true."""
        self.record = self._client.api.kill_orchestration_task(self.record.id, cancel=cancel)
        return TaskStatus.PENDING_KILL

    def last_runs(self, status: str = "all", limit: int | None = None) -> TaskRunList:
        """The task's runs, newest first (by updated at); `status` filters by the seed's word."""
        found = self._client.api.orchestration_task_runs(self.record.id, status=status, limit=limit)
        return TaskRunList(TaskRun(self._client, r) for r in found)

    def _table(self) -> tuple[list[str], list[list[str]]]:
        return ["Field", "Value"], [
            ["ID", self.id],
            ["Name", self.name],
            ["Last Run Status", self.last_run_status],
            ["Type", self.type],
            ["Active", str(self.active)],
            ["Schedule", self.schedule],
            ["Created At", seed_time(self.created_at)],
            ["Updated At", seed_time(self.updated_at)],
        ]


class TaskRun(_Table):
    def __init__(self, client: Client, record: domain.TaskRun) -> None:
        self._client = client
        self.record = record

    task_id = property(lambda self: self.record.task_id)
    run_id = property(lambda self: self.record.run_id)
    # The seed calls the run a pod.
    pod_id = run_id
    status = property(lambda self: self.record.status)
    created_at = property(lambda self: self.record.created_at)
    updated_at = property(lambda self: self.record.updated_at)

    def logs(self, limit: int | None = None) -> LogLines:
        """The run's output lines, each prefixed with its time as the seed shows it; the last `limit` lines."""
        lines = [
            f"{seed_time(line.at)} {line.text}"
            for line in self._client.api.log_lines_so_far(self.record.run_id)
            if line.stream != "system"
        ]
        return LogLines(lines[-limit:] if limit else lines)

    def _table(self) -> tuple[list[str], list[list[str]]]:
        return _RUN_HEADERS, [_run_row(self)]


_RUN_HEADERS = ["task id", "pod id", "status", "created at", "updated at"]


def _run_row(run: TaskRun) -> list[str]:
    return [run.task_id, run.run_id, run.status, seed_time(run.created_at), seed_time(run.updated_at)]


class LogLines(list[str]):
    def _repr_html_(self) -> str:
        import html

        return "<pre>" + html.escape("\n".join(self)) + "</pre>"

    def __str__(self) -> str:
        return "\n".join(self)


class OrchestrationList(list[Orchestration]):
    def _repr_html_(self) -> str:
        return html_table(*self._table())

    def __repr__(self) -> str:
        return text_table(*self._table())

    def _table(self) -> tuple[list[str], list[list[str]]]:
        headers = ["id", "name", "status", "filename", "sha", "created at", "updated at"]
        rows = [
            [
                o.id,
                o.name,
                o.record.status.value,
                o.filename,
                short_sha(o.sha),
                seed_time(o.created_at),
                seed_time(o.updated_at),
            ]
            for o in self
        ]
        return headers, rows


class TaskList(list[Task]):
    def _repr_html_(self) -> str:
        return html_table(*self._table())

    def __repr__(self) -> str:
        return text_table(*self._table())

    def _table(self) -> tuple[list[str], list[list[str]]]:
        headers = ["id", "name", "last run status", "type", "active", "schedule", "created at", "updated at"]
        rows = [
            [
                t.id,
                t.name,
                t.last_run_status,
                t.type,
                str(t.active),
                t.schedule,
                seed_time(t.created_at),
                seed_time(t.updated_at),
            ]
            for t in self
        ]
        return headers, rows


class TaskRunList(list[TaskRun]):
    def _repr_html_(self) -> str:
        return html_table(_RUN_HEADERS, [_run_row(r) for r in self])

    def __repr__(self) -> str:
        return text_table(_RUN_HEADERS, [_run_row(r) for r in self])


class Client:
    """The seed's client. With no arguments it reaches the configured server (`ame setup`), else the local `ame
    server`; inside a task, the server that started it, with the run's own token. `auth_type` is ignored, as the
    seed says."""

    def __init__(
        self, target: str | None = None, *, auth_type: Any = None, token: str | None = None, timeout: float = 30.0
    ) -> None:
        self.api = GrpcClient(target, timeout=timeout, token=token)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.api.close()

    @staticmethod
    def in_task() -> bool:
        """True inside a run AME started (an orchestration task, an ame.yml task)."""
        return in_task()

    @staticmethod
    def task_args() -> JsonValue:
        """The `json_args` the task was started with (a webhook's payload for an ame.yml task)."""
        return task_args()

    def upload_orchestration(
        self,
        path: str | Path | None = None,
        bytes_buffer: bytes | None = None,
        name: str | None = None,
        file_name: str | None = None,
    ) -> Orchestration:
        """Upload a ZIP holding main.py (and optionally one requirements.txt): from `path`, or `bytes_buffer` with
        `name`. Uploading a name again makes a new version. Its environment is then built once (status
        pending_packaging, then ready or packaging_failed)."""
        if path is not None and bytes_buffer is not None:
            raise ValueError("give either path or bytes_buffer (with name), not both")
        if path is None and bytes_buffer is None:
            raise ValueError("give path (a .zip file) or bytes_buffer (the ZIP's bytes) with name")
        if path is not None:
            source = Path(path)
            if not source.is_file():
                raise FileNotFoundError(f"{source}: no such file")
            name = name or source.name.removesuffix(".zip")
            file_name = file_name or source.name
            chunks = _file_chunks(source)
        else:
            if not name:
                raise ValueError("bytes_buffer needs name (the orchestration's name)")
            assert bytes_buffer is not None
            data = bytes(bytes_buffer)
            chunks = iter([data[i : i + _CHUNK] for i in range(0, len(data), _CHUNK)])
        record = self.api.upload_orchestration_bytes(name, file_name or "", chunks)
        return Orchestration(self, record)

    def list_orchestrations(self) -> OrchestrationList:
        return OrchestrationList(Orchestration(self, r) for r in self.api.list_orchestration_records())

    def get_orchestration(self, name_or_id: str) -> Orchestration:
        return Orchestration(self, self.api.get_orchestration(name_or_id))

    def list_tasks(self, killed: bool = False) -> TaskList:
        """Every task, newest (by updated at) first; `killed=True`: only those killed."""
        return TaskList(Task(self, r) for r in self.api.list_orchestration_tasks(killed=killed))

    def get_task(self, task_id: str) -> Task:
        return Task(self, self.api.get_orchestration_task(task_id))


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            yield chunk


__all__ += ["NONE_SHOWN", "PACKAGING_WAIT_SECONDS", "LogLines", "OrchestrationList", "TaskList", "TaskRunList"]
