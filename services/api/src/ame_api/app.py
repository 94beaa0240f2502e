"""The api service assembled: registry consumer, outbox relay, REST and gRPC servers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ame_api.artifacts import ArtifactService
from ame_api.auth import TokenService
from ame_api.data_sets import DataSetService
from ame_api.follow import LogFollower
from ame_api.grpc.auth import AuthInterceptor
from ame_api.grpc.server import GrpcServer
from ame_api.grpc.servicer import AmeServicer
from ame_api.models import ModelService
from ame_api.orchestrations import OrchestrationService
from ame_api.peach_loops import LoopDriver, LoopService
from ame_api.project_store import StoreComponent
from ame_api.projects import ProjectService
from ame_api.rest.app import RestServer, create_app
from ame_api.retention import Retention
from ame_api.runs import OutboxRelay, RunService
from ame_api.schedules import ScheduleService
from ame_api.secrets.service import SecretService
from ame_api.settings import ApiSettings
from ame_api.sources.service import SourceService
from ame_api.sources.sync import SourceSyncer
from ame_api.tasks import TaskService
from ame_api.webhooks import WebhookService
from ame_platform.bus.consumer import PullConsumer
from ame_platform.bus.subjects import API_MODEL_RUNS, API_PIPELINE_STEPS, API_REGISTRY, API_TRIGGERS
from ame_platform.clock import clock_from
from ame_platform.lifecycle import Component, Periodic
from ame_platform.runtime import Runtime

SERVICE = "api"
MIGRATIONS = "ame_api"


@dataclass
class ApiService:
    runs: RunService
    tokens: TokenService
    projects: ProjectService
    store: StoreComponent
    secrets: SecretService
    registry: PullConsumer
    triggers: PullConsumer
    relay: Periodic
    admission: Periodic
    rest: RestServer
    grpc: GrpcServer
    sources: SourceService
    syncer: SourceSyncer
    retention: Periodic | None = None
    loops: LoopDriver | None = None
    model_runs: PullConsumer | None = None
    pipeline_steps: PullConsumer | None = None

    @property
    def components(self) -> list[Component]:
        # Consumers first, front doors last: the lifecycle drains in reverse, so intake stops first.
        periodic: list[Component] = [self.retention] if self.retention is not None else []
        if self.loops is not None:
            periodic.append(self.loops)
        model_runs = [self.model_runs] if self.model_runs is not None else []
        steps = [self.pipeline_steps] if self.pipeline_steps is not None else []
        return [
            self.registry,
            self.triggers,
            *model_runs,
            *steps,
            self.relay,
            self.admission,
            self.store,
            self.secrets,
            self.syncer,
            *periodic,
            self.rest,
            self.grpc,
        ]


def build(settings: ApiSettings, runtime: Runtime) -> ApiService:
    store = StoreComponent(settings)
    clock = clock_from(settings.clock)
    projects = ProjectService(runtime, settings, store, clock)
    tasks = TaskService(runtime, settings)
    artifacts = ArtifactService(runtime, settings, store)
    tokens = TokenService(runtime, settings)
    runs = RunService(runtime, settings, project_sources=projects.launch_source)
    runs.data_sets = DataSetService(runtime, store, runs, settings.project_spool_dir)
    schedules = ScheduleService(runtime, runs, clock)
    follower = LogFollower(runtime, settings)
    secrets = SecretService(runtime, settings)
    webhooks = WebhookService(runtime, settings, runs, secrets)
    syncer = SourceSyncer(runtime, settings, settings.projectsrc, projects, secrets, clock)
    sources = SourceService(runtime, settings.projectsrc, syncer, secrets, webhooks, clock)
    orchestrations = OrchestrationService(runtime, settings, projects, runs, follower)
    registry = runtime.events_consumer(
        API_REGISTRY,
        runtime.names.run_states_wildcard,
        runs.apply_event,
        name="registry",
        concurrency=settings.registry_concurrency,
        tracer="ame_api",
        on_dead_letter=runs.apply_dead_lettered_event,
    )
    triggers = runtime.events_consumer(
        API_TRIGGERS,
        runtime.names.schedule_fired,
        runs.apply_schedule_fired,
        name="triggers",
        concurrency=8,
        tracer="ame_api",
    )
    pipeline_steps = runtime.events_consumer(
        API_PIPELINE_STEPS,
        runtime.names.pipeline_step_requested,
        runs.apply_step_requested,
        name="pipeline-steps",
        concurrency=16,
        tracer="ame_api",
    )
    # Both front doors tell clients the same wait while the database is away.
    loop_driver = LoopDriver(runtime, settings.peach, runs, clock)
    projects.peach_changed = loop_driver.wake
    models = ModelService(runtime, settings, projects, runs)
    model_runs = runtime.events_consumer(
        API_MODEL_RUNS,
        runtime.names.model_run_requested,
        models.apply_run_requested,
        name="model-runs",
        concurrency=8,
        tracer="ame_api",
    )
    rest_app = create_app(
        runs,
        follower,
        projects,
        tasks,
        tokens,
        settings,
        secrets,
        artifacts,
        webhooks,
        schedules,
        sources,
        loop_service=LoopService(runtime),
        model_service=models,
    )
    servicer = AmeServicer(
        runs,
        follower,
        projects,
        tasks,
        tokens,
        secrets,
        artifacts=artifacts,
        webhooks=webhooks,
        schedules=schedules,
        sources=sources,
        models=models,
        orchestrations=orchestrations,
        retry_after_seconds=settings.retry_after,
    )
    rest = RestServer(rest_app, settings.rest_host, settings.rest_port, tls=_tls(settings))
    webhooks.rest_url = rest.url
    retention = Retention(runtime, settings, store)
    return ApiService(
        runs=runs,
        tokens=tokens,
        projects=projects,
        store=store,
        secrets=secrets,
        registry=registry,
        triggers=triggers,
        pipeline_steps=pipeline_steps,
        relay=Periodic("outbox-relay", 1.0, OutboxRelay(runtime, settings).relay_once),
        admission=Periodic("admission", settings.admission.interval, runs.admission.tick),
        rest=rest,
        sources=sources,
        syncer=syncer,
        grpc=GrpcServer(
            servicer,
            settings.grpc_host,
            settings.grpc_port,
            AuthInterceptor(tokens, retry_after_seconds=settings.retry_after),
            max_receive_bytes=max(2 * 1024 * 1024, settings.project_max_files * 512),
            tls=_tls(settings),
        ),
        loops=loop_driver,
        retention=(
            Periodic("retention", settings.retention_interval, retention.run_once) if retention.enabled else None
        ),
        model_runs=model_runs,
    )


def _tls(settings: ApiSettings) -> tuple[Path, Path] | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    return settings.tls_cert_file, settings.tls_key_file


def build_components(settings: ApiSettings, runtime: Runtime) -> list[Component]:
    return build(settings, runtime).components
