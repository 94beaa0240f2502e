"""The FastAPI application and the server component that runs it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

import ame
from ame_api.artifacts import ArtifactService
from ame_api.auth import Forbidden, TokenService
from ame_api.follow import LogFollower
from ame_api.models import ModelService
from ame_api.peach_loops import LoopService
from ame_api.projects import ProjectService
from ame_api.rest import (
    admin,
    artifacts,
    data_sets,
    errors,
    loops,
    org_limits,
    projects,
    runs,
    schedules,
    secrets,
    sources,
    tasks,
    tokens,
    webhooks,
)
from ame_api.rest import models as rest_models
from ame_api.rest.auth import Authenticate
from ame_api.runs import RunService
from ame_api.schedules import ScheduleService
from ame_api.secrets.service import SecretService
from ame_api.settings import ApiSettings
from ame_api.sources.service import SourceService
from ame_api.tasks import TaskService
from ame_api.webhooks import WebhookService
from ame_platform.lifecycle import Supervisor


def create_app(
    run_service: RunService,
    follower: LogFollower,
    project_service: ProjectService,
    task_service: TaskService,
    token_service: TokenService,
    settings: ApiSettings,
    secret_service: SecretService,
    artifact_service: ArtifactService,
    webhook_service: WebhookService | None = None,
    schedule_service: ScheduleService | None = None,
    source_service: SourceService | None = None,
    loop_service: LoopService | None = None,
    model_service: ModelService | None = None,
) -> FastAPI:
    app = FastAPI(
        title="AME",
        version=ame.__version__,
        description="Submit runs, read the run registry and follow run output.",
        # RunSpec is recursive (a pipeline's steps are run specs); one schema per model keeps its name `RunSpec`.
        separate_input_output_schemas=False,
    )
    # Every request is authenticated first (inside the error guard, so a database outage is a 503).
    errors.install(
        app,
        retry_after_seconds=settings.retry_after,
        authenticate=lambda inner: Authenticate(inner, token_service),
    )
    app.include_router(runs.router(run_service, follower))
    app.include_router(tokens.router(token_service))
    app.include_router(admin.router(run_service.deadletters))
    app.include_router(tasks.router(task_service))
    app.include_router(secrets.router(secret_service))
    app.include_router(artifacts.router(artifact_service))
    app.include_router(org_limits.router(run_service.admission))
    if webhook_service is not None:
        app.include_router(webhooks.router(webhook_service))
    projects.install(app, project_service, settings)
    if schedule_service is not None:
        app.include_router(schedules.router(schedule_service))
    if source_service is not None:
        app.include_router(sources.router(source_service))
    if loop_service is not None:
        app.include_router(loops.router(loop_service))
    if model_service is not None:
        app.include_router(rest_models.router(model_service))
    if run_service.data_sets is not None:
        app.include_router(data_sets.router(run_service.data_sets))

    @app.get("/healthz", tags=["health"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.exception_handler(Forbidden)
    async def _forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return JSONResponse(status_code=403, content={"error": str(exc)})

    return app


class _Server(uvicorn.Server):
    # Signals belong to the process lifecycle (ame_platform.lifecycle); uvicorn must not take them over.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class RestServer:
    """uvicorn on a socket bound before start, so port 0 works and the real port is known."""

    name = "rest"

    def __init__(self, app: FastAPI, host: str, port: int, *, tls: tuple[Path, Path] | None = None) -> None:
        """`tls`: (certificate, key) PEM files to serve HTTPS with."""
        self._app = app
        self._sock = socket.create_server((host, port), reuse_port=False)
        self._sock.setblocking(False)
        self.host, self.port = self._sock.getsockname()[:2]
        self._scheme = "https" if tls else "http"
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            ssl_certfile=str(tls[0]) if tls else None,
            ssl_keyfile=str(tls[1]) if tls else None,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"{self._scheme}://{self.host}:{self.port}"

    async def start(self, supervisor: Supervisor) -> None:
        self._task = supervisor.spawn("rest", self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)

    async def drain(self) -> None:
        # uvicorn stops accepting, then waits for open requests (log followers close when the loop stops).
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
