"""Models (ame.yml `models:`): train one from a pushed version, list each model's latest and latest validated version.

`train` records a model version and publishes `ModelTrainRequested` through the outbox, in one transaction; the
scheduler (`ame_scheduler.models`) sequences the training run and then the validation run, asking this service for
each (`ModelRunRequested`, consumer `api-model-runs`), which submits it with the run id the scheduler chose and the
idempotency key `model:<version>:train|validate`. A version's state follows from its runs (`ame.domain.ml_models`).
"""

from __future__ import annotations

import logging
import re

from nats.aio.msg import Msg

from ame import model_messages
from ame.codecs import DecodeError
from ame.domain import RunSpec
from ame.domain.ml_models import ModelSummary, ModelVersion, ModelVersionState
from ame.domain.principals import Principal
from ame.domain.runs import EnvVar, TriggerKind
from ame.run_specs import run_spec_for_task
from ame.spec import ResolvedTask, SpecError, resolve_model
from ame_api import mlflow_registry, organisations
from ame_api.admission import Refused
from ame_api.projects import ProjectService
from ame_api.repositories import models as repo
from ame_api.repositories import runs as runs_repo
from ame_api.repositories.runs import NotFound
from ame_api.runs import InvalidRequest, RunService
from ame_api.settings import ApiSettings
from ame_platform.bus.consumer import Poison
from ame_platform.bus.publisher import headers_for
from ame_platform.runtime import Runtime

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


class ModelService:
    def __init__(self, runtime: Runtime, settings: ApiSettings, projects: ProjectService, runs: RunService) -> None:
        self._rt = runtime
        self._settings = settings
        self._projects = projects
        self._runs = runs

    async def train(
        self, principal: Principal, organisation: str, project: str, model: str, version_id: str
    ) -> ModelVersion:
        """A new version of `model`, trained from version `version_id` of `project`: recorded, and its training
        asked of the scheduler. NotFound for an unknown project, version or model; InvalidRequest for a model whose
        tasks do not resolve or that the organisation may not run."""
        org = organisations.resolve(principal, organisation)
        for what, value in (("project", project), ("model", model)):
            if not _NAME.match(value):
                raise InvalidRequest(f"{what} {value[:80]!r} is not a name (letters, digits, '_', '.', '-')")
        _, spec, external = await self._projects.version_spec(principal, org, project, version_id)
        try:
            training, validation = resolve_model(spec, model, external_templates=external)
        except SpecError as exc:
            message = "; ".join(p.message for p in exc.problems)
            if f"no model named '{model}'" in message:
                raise NotFound(f"project {project!r} (version {version_id[:12]}): {message}") from None
            raise InvalidRequest(f"model {model!r}: {message}") from None
        async with self._rt.pool.acquire() as conn, conn.transaction():
            version = await repo.add_version(
                conn,
                organisation=org,
                project=project,
                model=model,
                project_version_id=version_id,
                has_validation=validation is not None,
            )
            request = model_messages.TrainRequest(
                model_version_id=version.id,
                organisation=org,
                project=project,
                model=model,
                number=version.number,
                training=self._spec(training, version, model_messages.TRAIN),
                validation=self._spec(validation, version, model_messages.VALIDATE) if validation else None,
            )
            for run_spec in (request.training, request.validation):
                if run_spec is not None:
                    try:
                        self._runs.admission.check_spec(run_spec)
                    except Refused as exc:
                        raise InvalidRequest(f"model {model!r}: {exc}") from None
            msg_id = model_messages.requested_msg_id(version.id)
            payload = model_messages.encode_train_requested(request)
            outbox_id = await runs_repo.add_outbox(
                conn,
                msg_id=msg_id,
                subject=self._rt.names.model_train_requested,
                payload=payload,
                headers=headers_for(msg_id),
            )
        try:
            await self._rt.js.publish(
                self._rt.names.model_train_requested, payload, headers=headers_for(msg_id), timeout=5.0
            )
        except Exception:
            log.warning("model %s: training request not published; the outbox relay will", version.id, exc_info=True)
        else:
            async with self._rt.pool.acquire() as conn:
                await runs_repo.delete_outbox(conn, outbox_id)
        log.info("model %s/%s/%s v%d: training asked for", org, project, model, version.number)
        return version

    @staticmethod
    def _spec(task: ResolvedTask, version: ModelVersion, stage: str) -> RunSpec:
        spec = run_spec_for_task(task, project=version.project, project_version_id=version.project_version_id)
        # The run knows which model version it works for, as its labels say to whoever lists it.
        extra = [
            EnvVar(key="AME_MODEL_NAME", value=version.model),
            EnvVar(key="AME_MODEL_VERSION", value=str(version.number)),
        ]
        labels = {"ame.model": version.model, "ame.model.version": str(version.number), "ame.model.stage": stage}
        return spec.model_copy(update={"environment": [*spec.environment, *extra], "labels": {**spec.labels, **labels}})

    async def apply_run_requested(self, msg: Msg) -> None:
        """Consumer `api-model-runs`: start the run the scheduler asked for, once, with the id it chose."""
        try:
            request = model_messages.parse_run_requested(msg.data)
        except DecodeError as exc:
            raise Poison(str(exc)) from exc
        principal = Principal.trigger(request.organisation, "model")
        try:
            run = await self._runs.submit(
                principal, request.spec, trigger=TriggerKind.MODEL, idempotency_key=request.key, run_id=request.run_id
            )
        except InvalidRequest as exc:
            # The same request would be refused again: the version fails with the reason instead of waiting forever.
            reason = f"the {request.stage} run was refused: {exc}"[:2000]
            log.warning("model version %s: %s", request.model_version_id, reason)
            async with self._rt.pool.acquire() as conn:
                await repo.set_failure(conn, version_id=request.model_version_id, failure=reason)
            return
        async with self._rt.pool.acquire() as conn:
            await repo.set_run(conn, version_id=request.model_version_id, stage=request.stage, run_id=run.id)

    async def list(self, principal: Principal, organisation: str, project: str | None) -> list[ModelSummary]:
        """Each model that was ever trained (of `project`, when given) with its latest and latest validated version."""
        org = organisations.resolve(principal, organisation)
        async with self._rt.pool.acquire() as conn:
            latest = await repo.list_versions(conn, organisation=org, project=project, per_model=1)
            found = []
            for version in latest:
                validated = (
                    version
                    if version.state == ModelVersionState.VALIDATED
                    else await repo.latest_validated(
                        conn, organisation=org, project=version.project, model=version.model
                    )
                )
                found.append(
                    ModelSummary(
                        project=version.project,
                        model=version.model,
                        latest=await self._linked(version),
                        latest_validated=await self._linked(validated) if validated is not None else None,
                    )
                )
        return found

    async def _linked(self, version: ModelVersion) -> ModelVersion:
        """The version with its MLflow registry version, looked up once its training succeeded (then kept)."""
        if version.mlflow_version or not self._settings.mlflow.tracking_uri:
            return version
        if version.state not in (ModelVersionState.VALIDATING, ModelVersionState.VALIDATED, ModelVersionState.FAILED):
            return version
        found = await mlflow_registry.registry_version(self._settings.mlflow, version.model, version.training_run_id)
        if not found:
            return version
        async with self._rt.pool.acquire() as conn:
            await repo.set_mlflow_version(conn, version_id=version.id, mlflow_version=found)
        return version.model_copy(update={"mlflow_version": found})
