"""Orchestration tasks (seed 004) where their runs meet kills, deletes, crashes and packaging: the api's services
against real NATS and PostgreSQL, with no launcher (a packaging run stays queued until a test ends it).

* A schedule fire already on its way when its task is killed, or its orchestration deleted, makes no run; a kill
  that commits while the fire is being submitted wins (the fire waits for it on the task's row).
* A task run's own token carries the run's id: `token list` leaves it out, it works as a run-scope token, it is
  revoked when the run ends and deleted an hour later.
* A version recorded without its packaging run gets it when read again (the same run if it was made).
* A run-once task whose run could not be submitted is not left behind; a task start waits for packaging to end,
  or refuses after AME_ORCHESTRATIONS_PACKAGING_WAIT.
"""

from __future__ import annotations

import asyncio
import io
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from nats.aio.msg import Msg
from pydantic import SecretStr

from ame.bus_messages import encode_schedule_fired
from ame.domain import RunSpec, RunState
from ame.domain.principals import Principal, PrincipalKind, Scope
from ame_api import app as api_app
from ame_api import convert
from ame_api.app import ApiService
from ame_api.auth import Unauthenticated
from ame_api.follow import LogFollower
from ame_api.orchestrations import OrchestrationService
from ame_api.repositories import runs as runs_repo
from ame_api.repositories import tokens as tokens_repo
from ame_api.runs import InvalidRequest
from ame_api.settings import ApiSettings, OrchestrationSettings
from ame_platform.lifecycle import Supervisor
from ame_platform.runtime import Runtime, open_runtime
from ame_platform.settings import NatsSettings, PostgresSettings, TelemetrySettings
from ame_platform.storage import StorageSettings
from ame_server.server import migrate_all
from tests.stack_fixtures import _delete_streams, _fresh_secrets
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

ADMIN = Principal("default", Scope.SERVER_ADMIN, PrincipalKind.TOKEN, "test")
YEARLY = "0 0 1 1 *"


@dataclass
class Api:
    runtime: Runtime
    settings: ApiSettings
    built: ApiService

    def orchestrations(self, packaging_wait: float | None = None) -> OrchestrationService:
        settings = self.settings
        if packaging_wait is not None:
            settings = settings.model_copy(
                update={"orchestrations": OrchestrationSettings(packaging_wait=packaging_wait)}
            )
        built = self.built
        return OrchestrationService(
            self.runtime, settings, built.projects, built.runs, LogFollower(self.runtime, settings)
        )


@pytest_asyncio.fixture(loop_scope="session")
async def api(nats_url: str, pg_dsn: str, bus_prefix: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The api's services with its object store open; no consumer, front door or launcher runs."""
    await migrate_all(pg_dsn)
    nats = NatsSettings(url=nats_url, prefix=bus_prefix)
    postgres = PostgresSettings(dsn=SecretStr(pg_dsn), pool_max_size=10)
    telemetry = TelemetrySettings(exporter="memory")
    async with open_runtime(name="test", nats=nats, postgres=postgres, telemetry=telemetry) as runtime:
        settings = ApiSettings(
            rest_port=0,
            grpc_port=0,
            nats=nats,
            postgres=postgres,
            telemetry=telemetry,
            storage=StorageSettings(local_root=tmp_path / "objects"),
            secrets=_fresh_secrets(),
        )
        built = api_app.build(settings, runtime)
        await built.store.start(Supervisor())
        try:
            yield Api(runtime, settings, built)
        finally:
            await built.store.drain()
            await _delete_streams(runtime)


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("main.py", f"print('hello {uuid.uuid4()}')\n")
    return buffer.getvalue()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _upload(service: OrchestrationService, name: str = "hello") -> str:
    return (await service.upload(ADMIN, name=name, file_name=f"{name}.zip", chunks=_chunks(_zip()))).id


async def _end_packaging(api: Api, service: OrchestrationService, orchestration: str, state: RunState) -> None:
    run_id = (await service.get(ADMIN, orchestration)).packaging_run_id
    assert run_id
    async with api.runtime.pool.acquire() as conn:
        applied = await runs_repo.apply_state(
            conn, run_id=run_id, attempt=1, state=state, exit_code=0, reason="", at=datetime.now(UTC)
        )
    assert applied is not None


async def _ready(api: Api, service: OrchestrationService, name: str = "hello") -> str:
    orchestration = await _upload(service, name)
    await _end_packaging(api, service, orchestration, RunState.SUCCEEDED)
    return orchestration


async def _fire(api: Api, task_id: str) -> Msg:
    """The schedule-fired message the scheduler sends for the task's schedule (as the api sent it)."""
    async with api.runtime.pool.acquire() as conn:
        row = await conn.fetchrow(
            """SELECT s.spec FROM project_schedules s JOIN orchestration_tasks t
               ON t.project = s.project AND t.run_task = s.task WHERE t.id = $1::uuid""",
            task_id,
        )
    assert row is not None
    spec = RunSpec.model_validate_json(row["spec"])
    data = encode_schedule_fired(str(uuid.uuid4()), "default", YEARLY, spec, datetime.now(UTC))
    return Msg(_client=api.runtime.nc, data=data)


async def _runs_of(api: Api, task_id: str) -> int:
    async with api.runtime.pool.acquire() as conn:
        return int(
            await conn.fetchval(
                """SELECT count(*) FROM runs r WHERE r.project || '/' || r.task = (
                       SELECT project || '/' || run_task FROM orchestration_tasks WHERE id = $1::uuid)""",
                task_id,
            )
            or 0
        )


async def test_fire_of_a_killed_or_deleted_task_makes_no_run(api: Api) -> None:
    service = api.orchestrations()
    orchestration = await _ready(api, service)
    live = await service.start_task(
        ADMIN, orchestration, name="live", json_args="{}", timeout_seconds=None, schedule=YEARLY
    )
    killed = await service.start_task(
        ADMIN, orchestration, name="killed", json_args="{}", timeout_seconds=None, schedule=YEARLY
    )
    fires = {task.id: await _fire(api, task.id) for task in (live, killed)}
    await service.kill(ADMIN, killed.id)

    await api.built.runs.apply_schedule_fired(fires[live.id])
    await api.built.runs.apply_schedule_fired(fires[killed.id])
    assert (await _runs_of(api, live.id), await _runs_of(api, killed.id)) == (1, 0)

    # Deleted with its orchestration: the task's row is gone, which counts as killed.
    project = (await service.get(ADMIN, orchestration)).project
    await service.delete(ADMIN, orchestration)
    await api.built.runs.apply_schedule_fired(fires[live.id])  # a redelivery of the slot that ran
    slot = Msg(
        _client=api.runtime.nc,
        data=encode_schedule_fired(
            str(uuid.uuid4()),
            "default",
            YEARLY,
            convert.parse_schedule_fired(fires[live.id].data).spec,
            datetime.now(UTC) + timedelta(days=366),
        ),
    )
    await api.built.runs.apply_schedule_fired(slot)
    async with api.runtime.pool.acquire() as conn:
        runs = await conn.fetchval("SELECT count(*) FROM runs WHERE project = $1 AND task LIKE 'task-%'", project)
    assert runs == 1


async def test_a_kill_committed_during_a_fire_wins(api: Api) -> None:
    service = api.orchestrations()
    orchestration = await _ready(api, service)
    task = await service.start_task(
        ADMIN, orchestration, name="t", json_args="{}", timeout_seconds=None, schedule=YEARLY
    )
    fire = await _fire(api, task.id)
    async with api.runtime.pool.acquire() as killer:
        kill = killer.transaction()
        await kill.start()
        await killer.execute("UPDATE orchestration_tasks SET killed_at = now() WHERE id = $1::uuid", task.id)
        firing = asyncio.create_task(api.built.runs.apply_schedule_fired(fire))

        async def fire_waits_for_the_kill() -> bool:
            async with api.runtime.pool.acquire() as conn:
                return bool(
                    await conn.fetchval(
                        """SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'
                           AND query LIKE '%orchestration_tasks%FOR SHARE%')"""
                    )
                )

        try:
            await wait_until(fire_waits_for_the_kill, timeout=10, message="the fire to wait on the task's row")
        finally:
            await kill.commit()
        await firing
    assert await _runs_of(api, task.id) == 0


async def test_a_task_runs_token_is_a_run_token(api: Api) -> None:
    service = api.orchestrations()
    orchestration = await _ready(api, service)
    task = await service.start_task(
        ADMIN, orchestration, name="once", json_args="{}", timeout_seconds=None, schedule=""
    )
    [run] = await service.task_runs(ADMIN, task.id)
    resolved = await api.built.secrets.resolve_for_run("default", run.run_id, 1)
    token = next(r.value for r in resolved if r.value)
    principal = await api.built.tokens.authenticate(token)
    assert (principal.scope, principal.kind) == (Scope.RUN, PrincipalKind.TOKEN)
    async with api.runtime.pool.acquire() as conn:
        assert [
            t for t in await tokens_repo.list_tokens(conn, organisation=None) if t.created_by.startswith("run:")
        ] == []
        assert await conn.fetchval("SELECT count(*) FROM api_tokens WHERE run_id = $1::uuid", run.run_id) == 1

    ended = convert.state_changed(run.run_id, 1, RunState.FAILED, 1, "ended")
    await api.built.runs.apply_event(Msg(_client=api.runtime.nc, data=ended))
    with pytest.raises(Unauthenticated):
        await api.built.tokens.authenticate(token)
    async with api.runtime.pool.acquire() as conn:
        await conn.execute(
            "UPDATE api_tokens SET revoked_at = now() - interval '61 minutes' WHERE run_id = $1::uuid", run.run_id
        )
        await tokens_repo.delete_expired_run_tokens(conn)
        assert await conn.fetchval("SELECT count(*) FROM api_tokens WHERE run_id = $1::uuid", run.run_id) == 0


async def test_a_version_without_its_packaging_run_gets_it(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    service = api.orchestrations()
    # The api stopped after recording the version, before its packaging run was recorded: the same run comes back.
    first = await service.get(ADMIN, await _upload(service, "made"))
    async with api.runtime.pool.acquire() as conn:
        await conn.execute("UPDATE orchestration_versions SET packaging_run_id = NULL")
    assert [o.packaging_run_id for o in await service.list_all(ADMIN)] == [first.packaging_run_id]

    # ... or before it was submitted at all: it is submitted when read, once.
    submit = api.built.runs.submit

    async def stopped(*args: object, **kwargs: object) -> object:
        raise ConnectionError("the api stopped")

    monkeypatch.setattr(api.built.runs, "submit", stopped)
    with pytest.raises(ConnectionError):
        await _upload(service, "never")
    monkeypatch.setattr(api.built.runs, "submit", submit)
    got = await service.get(ADMIN, "never")
    assert got.packaging_run_id and got.status.value == "pending_packaging"
    assert (await service.get(ADMIN, "never")).packaging_run_id == got.packaging_run_id
    packaging = await api.built.runs.get(ADMIN, got.packaging_run_id)
    assert packaging.state is RunState.QUEUED and packaging.spec.project == got.project


async def test_a_run_once_task_whose_run_failed_to_submit_is_not_left(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = api.orchestrations()
    orchestration = await _ready(api, service)

    async def refused(*args: object, **kwargs: object) -> object:
        raise InvalidRequest("refused by admission")

    monkeypatch.setattr(api.built.runs, "submit", refused)
    with pytest.raises(InvalidRequest, match="refused by admission"):
        await service.start_task(ADMIN, orchestration, name="once", json_args="{}", timeout_seconds=None, schedule="")
    assert await service.list_tasks(ADMIN) == []


async def test_a_task_start_waits_for_packaging(api: Api) -> None:
    impatient = api.orchestrations(packaging_wait=0.5)
    orchestration = await _upload(impatient)
    with pytest.raises(InvalidRequest, match=r"still packaging .* start the task again"):
        await impatient.start_task(
            ADMIN, orchestration, name="early", json_args="{}", timeout_seconds=None, schedule=""
        )
    assert await impatient.list_tasks(ADMIN) == []

    patient = api.orchestrations(packaging_wait=30.0)
    starting = asyncio.create_task(
        patient.start_task(ADMIN, orchestration, name="waits", json_args="{}", timeout_seconds=None, schedule="")
    )
    assert await patient.list_tasks(ADMIN) == [] and not starting.done()
    await _end_packaging(api, patient, orchestration, RunState.SUCCEEDED)
    task = await asyncio.wait_for(starting, 10)
    assert [r.state for r in await patient.task_runs(ADMIN, task.id)] == [RunState.QUEUED]
