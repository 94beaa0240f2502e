"""A synchronous gRPC client for the AME server.

from ame.sdk import Client
from ame.domain import RunSpec

with Client() as ame:
    run = ame.submit_run(RunSpec(project="demo", task="hello", command="python -c 'print(1)'"))
    for event in ame.follow_logs(run.id):
        print(event)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import TracebackType
from typing import ParamSpec, Self, TypeVar

import grpc

from ame import model_messages
from ame.contracts.api.v1 import ame_service_pb2, ame_service_pb2_grpc
from ame.domain import LogEnd, LogLine, Run, RunSpec, RunState
from ame.domain.artifacts import Artifact
from ame.domain.data_sets import DataSetSummary
from ame.domain.ml_models import ModelSummary, ModelVersion
from ame.domain.orchestrations import Orchestration, OrchestrationTask, TaskRun
from ame.domain.projects import ManifestEntry, ProjectVersion
from ame.domain.schedules import Activation, ScheduleSummary
from ame.domain.secrets import SecretInfo
from ame.domain.sources import ProjectSource
from ame.domain.tasks import TaskSummary
from ame.domain.webhooks import Webhook
from ame.sdk import convert
from ame.sdk.credentials import DEFAULT_TARGET, authenticated_channel, discover_target, discover_token
from ame.sdk.errors import (
    AmeError,
    Conflict,
    InvalidArgument,
    MissingBlobs,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)

__all__ = ["DEFAULT_TARGET", "Client", "discover_target"]

P = ParamSpec("P")
T = TypeVar("T")


def _translate(target: str, exc: grpc.RpcError) -> AmeError:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(details)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return MissingBlobs(details)  # the api's only FAILED_PRECONDITION: a commit before its blobs
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(f"{details} (the server at {target}; `ame login` saves a token)")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(details)
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return Conflict(details)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(f"cannot reach the AME server at {target} ({details}); is `ame server` running?")
    return AmeError(details)


class Client:
    def __init__(self, target: str | None = None, *, timeout: float = 30.0, token: str | None = None) -> None:
        """`token` (default: `AME_TOKEN`, `ame login`'s, or the local server's) goes with every call."""
        self.target = target or discover_target()
        self._timeout = timeout
        self._channel = authenticated_channel(self.target, token or discover_token())
        self._stub = ame_service_pb2_grpc.AmeServiceStub(self._channel)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as exc:
            raise _translate(self.target, exc) from None

    def whoami(self) -> dict[str, str]:
        """The caller's organisation, scope, kind and token id."""
        response = self._call(self._stub.WhoAmI, ame_service_pb2.WhoAmIRequest(), timeout=self._timeout)
        return {
            "organisation": response.organisation,
            "scope": response.scope,
            "kind": response.kind,
            "token_id": response.token_id,
        }

    def submit_run(self, spec: RunSpec, *, idempotency_key: str | None = None) -> Run:
        request = convert.submit_request(spec, idempotency_key)
        response = self._call(self._stub.SubmitRun, request, timeout=self._timeout, wait_for_ready=False)
        return convert.run_from_pb(response.run)

    def get_run(self, run_id: str) -> Run:
        response = self._call(self._stub.GetRun, ame_service_pb2.GetRunRequest(run_id=run_id), timeout=self._timeout)
        return convert.run_from_pb(response.run)

    def list_runs(
        self,
        *,
        project: str | None = None,
        task: str | None = None,
        states: list[RunState] | None = None,
        limit: int = 50,
        id_prefix: str | None = None,
        parent_run_id: str | None = None,
    ) -> list[Run]:
        """Newest first, at most `limit` runs (following pages as needed). `id_prefix` (at least 4 hex digits,
        hyphens ignored) keeps the runs whose id starts with it."""
        runs: list[Run] = []
        token = ""
        while len(runs) < limit:
            request = convert.list_request(
                project, task, states, min(limit - len(runs), 1000), token, id_prefix, parent_run_id
            )
            response = self._call(self._stub.ListRuns, request, timeout=self._timeout)
            runs.extend(convert.run_from_pb(r) for r in response.runs)
            token = response.next_page_token
            if not token:
                break
        return runs

    def list_tasks(self, *, project: str | None = None, limit: int = 10_000) -> list[TaskSummary]:
        """The tasks of each project's latest pushed version with their last run, by project, then in ame.yml
        order; at most `limit` (following pages as needed)."""
        tasks: list[TaskSummary] = []
        token = ""
        while len(tasks) < limit:
            request = ame_service_pb2.ListTasksRequest(
                project=project or "", page_size=min(limit - len(tasks), 1000), page_token=token
            )
            response = self._call(self._stub.ListTasks, request, timeout=self._timeout)
            tasks.extend(convert.task_from_pb(t) for t in response.tasks)
            token = response.next_page_token
            if not token:
                break
        return tasks

    def cancel_run(self, run_id: str, reason: str = "") -> Run:
        request = ame_service_pb2.CancelRunRequest(run_id=run_id, reason=reason)
        response = self._call(self._stub.CancelRun, request, timeout=self._timeout)
        return convert.run_from_pb(response.run)

    def follow_logs(self, run_id: str, from_seq: int = 0) -> Iterator[LogLine | LogEnd]:
        """Every line from `from_seq` on, in order, then the LogEnd; blocks while the run is going."""
        for batch in self.follow_log_batches(run_id, from_seq):
            if isinstance(batch, LogEnd):
                yield batch
            else:
                yield from batch

    def follow_log_batches(self, run_id: str, from_seq: int = 0) -> Iterator[list[LogLine] | LogEnd]:
        """Like `follow_logs`, with the lines in lists of consecutive lines: as many as the server had ready at
        once. Cheaper for a chatty run (thousands of lines a second): one message per list, not per line."""
        request = ame_service_pb2.FollowLogsRequest(run_id=run_id, from_seq=from_seq, batched=True)
        stream = self._stub.FollowLogs(request)
        try:
            for event in stream:
                yield convert.follow_batch(event)
        except grpc.RpcError as exc:
            raise _translate(self.target, exc) from None
        finally:
            stream.cancel()

    # The server's secret store: values go in, never come back.

    def put_secret(self, name: str, value: str) -> bool:
        """Store (create or replace) a secret; True when it was created."""
        request = ame_service_pb2.PutSecretRequest(name=name, value=value)
        return bool(self._call(self._stub.PutSecret, request, timeout=self._timeout).created)

    def list_secrets(self) -> list[SecretInfo]:
        response = self._call(self._stub.ListSecrets, ame_service_pb2.ListSecretsRequest(), timeout=self._timeout)
        return [convert.secret_from_pb(s) for s in response.secrets]

    def list_webhooks(self, *, project: str | None = None) -> list[Webhook]:
        """The webhooks of each project's trigger version, each with its URL and most recent deliveries."""
        request = ame_service_pb2.ListWebhooksRequest(project=project or "")
        response = self._call(self._stub.ListWebhooks, request, timeout=self._timeout)
        return [convert.webhook_from_pb(w) for w in response.webhooks]

    def delete_secret(self, name: str) -> None:
        request = ame_service_pb2.DeleteSecretRequest(name=name)
        self._call(self._stub.DeleteSecret, request, timeout=self._timeout)

    # Project versions: `ame.packaging.push_project` drives the first three through the PushTransport protocol.

    def find_missing_blobs(self, project: str, files: list[ManifestEntry]) -> list[str]:
        request = ame_service_pb2.FindMissingBlobsRequest(project=project, files=convert.manifest_to_pb(files))
        response = self._call(self._stub.FindMissingBlobs, request, timeout=self._timeout)
        return list(response.missing_sha256)

    def upload_blob(self, project: str, sha256: str, size: int, chunks: Iterator[bytes]) -> bool:
        """Stream one blob; True if the server stored it, False if it held it already."""

        def requests() -> Iterator[ame_service_pb2.UploadBlobRequest]:
            header = ame_service_pb2.BlobHeader(project=project, sha256=sha256, size=size)
            yield ame_service_pb2.UploadBlobRequest(header=header)
            for chunk in chunks:
                yield ame_service_pb2.UploadBlobRequest(chunk=chunk)

        # No deadline: a large blob on a slow link takes as long as it takes.
        response = self._call(self._stub.UploadBlob, requests())
        return bool(response.created)

    def commit_version(self, project: str, files: list[ManifestEntry]) -> ProjectVersion:
        request = ame_service_pb2.CommitProjectVersionRequest(project=project, files=convert.manifest_to_pb(files))
        response = self._call(self._stub.CommitProjectVersion, request, timeout=self._timeout)
        return convert.version_from_pb(response.version)

    def activate_version(self, project: str, version_id: str) -> Activation:
        """Make the version the project's trigger version: its schedules replace the project's."""
        request = ame_service_pb2.ActivateProjectVersionRequest(project=project, version_id=version_id)
        response = self._call(self._stub.ActivateProjectVersion, request, timeout=self._timeout)
        return convert.activation_from_pb(response)

    def list_schedules(self, *, project: str | None = None) -> list[ScheduleSummary]:
        request = ame_service_pb2.ListSchedulesRequest(project=project or "")
        response = self._call(self._stub.ListSchedules, request, timeout=self._timeout)
        return [convert.schedule_from_pb(s) for s in response.schedules]

    def pause_schedule(self, name: str, *, project: str | None = None) -> ScheduleSummary:
        request = ame_service_pb2.ScheduleRequest(name=name, project=project or "")
        return convert.schedule_from_pb(self._call(self._stub.PauseSchedule, request, timeout=self._timeout).schedule)

    def resume_schedule(self, name: str, *, project: str | None = None) -> ScheduleSummary:
        request = ame_service_pb2.ScheduleRequest(name=name, project=project or "")
        return convert.schedule_from_pb(self._call(self._stub.ResumeSchedule, request, timeout=self._timeout).schedule)

    def list_data_sets(self, *, project: str | None = None) -> list[DataSetSummary]:
        """The newest production of each data set: status, size, version and producing run."""
        request = ame_service_pb2.ListDataSetsRequest(project=project or "")
        response = self._call(self._stub.ListDataSets, request, timeout=self._timeout)
        return [convert.data_set_from_pb(d) for d in response.data_sets]

    def refresh_data_set(self, project: str, name: str) -> DataSetSummary:
        """Produce the data set again, whatever version it has."""
        request = ame_service_pb2.RefreshDataSetRequest(project=project, name=name)
        return convert.data_set_from_pb(self._call(self._stub.RefreshDataSet, request, timeout=self._timeout).data_set)

    def get_data_set(
        self, project: str, name: str, *, definition_hash: str = "", produce: bool = False
    ) -> tuple[DataSetSummary, list[ManifestEntry]]:
        """The data set as this definition of it is produced (empty: the latest pushed), and the version's files
        once it is ready; `produce` starts its production if none has started."""
        request = ame_service_pb2.GetDataSetRequest(
            project=project, name=name, definition_hash=definition_hash, produce=produce
        )
        response = self._call(self._stub.GetDataSet, request, timeout=self._timeout)
        return convert.data_set_from_pb(response.data_set), convert.manifest_from_pb(response.files)

    def download_data_set_blob(self, project: str, name: str, version_id: str, sha256: str) -> Iterator[bytes]:
        request = ame_service_pb2.DownloadDataSetBlobRequest(
            project=project, name=name, version_id=version_id, sha256=sha256
        )
        stream = self._stub.DownloadDataSetBlob(request)
        try:
            for part in stream:
                yield part.chunk
        except grpc.RpcError as exc:
            raise _translate(self.target, exc) from None
        finally:
            stream.cancel()

    def trigger_schedule(self, name: str, *, project: str | None = None) -> Run:
        """Start the schedule's run now, out of turn."""
        request = ame_service_pb2.ScheduleRequest(name=name, project=project or "")
        return convert.run_from_pb(self._call(self._stub.TriggerSchedule, request, timeout=self._timeout).run)

    def add_project_source(
        self,
        url: str,
        *,
        branch: str = "",
        path: str = "",
        interval: str = "",
        secret: str = "",
        hook_secret: str = "",
    ) -> ProjectSource:
        """Track a git repository's branch: its head becomes a project version at each sync."""
        request = ame_service_pb2.AddProjectSourceRequest(
            url=url, branch=branch, path=path, interval=interval, secret=secret, hook_secret=hook_secret
        )
        response = self._call(self._stub.AddProjectSource, request, timeout=self._timeout)
        return convert.project_source_from_pb(response.source)

    def list_project_sources(self) -> list[ProjectSource]:
        response = self._call(
            self._stub.ListProjectSources, ame_service_pb2.ListProjectSourcesRequest(), timeout=self._timeout
        )
        return [convert.project_source_from_pb(s) for s in response.sources]

    def remove_project_source(self, source: str) -> ProjectSource:
        """Stop tracking the source (its id, or its URL when one source has it)."""
        request = ame_service_pb2.ProjectSourceRequest(source=source)
        response = self._call(self._stub.RemoveProjectSource, request, timeout=self._timeout)
        return convert.project_source_from_pb(response.source)

    def sync_project_source(self, source: str, *, wait: bool = True, timeout: float = 180.0) -> ProjectSource:
        """Sync the source now; with `wait`, once the sync has ended, its state."""
        request = ame_service_pb2.ProjectSourceRequest(source=source, wait=wait)
        response = self._call(self._stub.SyncProjectSource, request, timeout=timeout)
        return convert.project_source_from_pb(response.source)

    def train_model(self, project: str, model: str, version_id: str) -> ModelVersion:
        """Train `model` from version `version_id` of `project`: its training run, then its validation run."""
        request = ame_service_pb2.TrainModelRequest(project=project, model=model, project_version_id=version_id)
        response = self._call(self._stub.TrainModel, request, timeout=self._timeout)
        return model_messages.version_from_pb(response.version)

    def list_models(self, *, project: str | None = None) -> list[ModelSummary]:
        """Each model with its latest training and its latest validated version."""
        request = ame_service_pb2.ListModelsRequest(project=project or "")
        response = self._call(self._stub.ListModels, request, timeout=self._timeout)
        return [model_messages.summary_from_pb(m) for m in response.models]

    def list_versions(self, project: str, *, limit: int = 50) -> list[ProjectVersion]:
        """Newest first, at most `limit`."""
        versions: list[ProjectVersion] = []
        token = ""
        while len(versions) < limit:
            request = ame_service_pb2.ListProjectVersionsRequest(
                project=project, page_size=min(limit - len(versions), 1000), page_token=token
            )
            response = self._call(self._stub.ListProjectVersions, request, timeout=self._timeout)
            versions.extend(convert.version_from_pb(v) for v in response.versions)
            token = response.next_page_token
            if not token:
                break
        return versions

    def get_version(self, project: str, version_id: str) -> tuple[ProjectVersion, list[ManifestEntry]]:
        request = ame_service_pb2.GetProjectVersionRequest(project=project, version_id=version_id)
        response = self._call(self._stub.GetProjectVersion, request, timeout=self._timeout)
        return convert.version_from_pb(response.version), convert.manifest_from_pb(response.files)

    def download_blob(self, project: str, sha256: str) -> Iterator[bytes]:
        stream = self._stub.DownloadBlob(ame_service_pb2.DownloadBlobRequest(project=project, sha256=sha256))
        try:
            for part in stream:
                yield part.chunk
        except grpc.RpcError as exc:
            raise _translate(self.target, exc) from None
        finally:
            stream.cancel()

    def list_run_artifacts(self, run_id: str) -> list[Artifact]:
        """Every attempt's artifacts of a remote run, by path then attempt."""
        request = ame_service_pb2.ListRunArtifactsRequest(run_id=run_id)
        response = self._call(self._stub.ListRunArtifacts, request, timeout=self._timeout)
        return [convert.artifact_from_pb(pb) for pb in response.artifacts]

    def download_artifact(self, run_id: str, path: str, *, attempt: int | None = None) -> Iterator[bytes]:
        """The artifact's bytes in chunks (the latest attempt's unless `attempt` is given)."""
        request = ame_service_pb2.DownloadArtifactRequest(run_id=run_id, path=path, attempt=attempt or 0)
        stream = self._stub.DownloadArtifact(request)
        try:
            for part in stream:
                if not part.HasField("artifact"):
                    yield part.chunk
        except grpc.RpcError as exc:
            raise _translate(self.target, exc) from None
        finally:
            stream.cancel()

    # Orchestrations (seed 004); `ame.Client` (ame.sdk.orchestrations) gives them the seed's names and objects.

    def upload_orchestration_bytes(self, name: str, file_name: str, chunks: Iterator[bytes]) -> Orchestration:
        def requests() -> Iterator[ame_service_pb2.UploadOrchestrationRequest]:
            header = ame_service_pb2.UploadOrchestrationHeader(name=name, file_name=file_name)
            yield ame_service_pb2.UploadOrchestrationRequest(header=header)
            for chunk in chunks:
                yield ame_service_pb2.UploadOrchestrationRequest(chunk=chunk)

        response = self._call(self._stub.UploadOrchestration, requests(), timeout=max(self._timeout, 600.0))
        return convert.orchestration_from_pb(response.orchestration)

    def list_orchestration_records(self) -> list[Orchestration]:
        request = ame_service_pb2.ListOrchestrationsRequest()
        response = self._call(self._stub.ListOrchestrations, request, timeout=self._timeout)
        return [convert.orchestration_from_pb(pb) for pb in response.orchestrations]

    def get_orchestration(self, name_or_id: str) -> Orchestration:
        request = ame_service_pb2.OrchestrationRequest(name=name_or_id)
        response = self._call(self._stub.GetOrchestration, request, timeout=self._timeout)
        return convert.orchestration_from_pb(response.orchestration)

    def delete_orchestration(self, name_or_id: str) -> None:
        request = ame_service_pb2.OrchestrationRequest(name=name_or_id)
        self._call(self._stub.DeleteOrchestration, request, timeout=self._timeout)

    def start_orchestration_task(
        self, orchestration: str, *, name: str, json_args: str, timeout: float | None, schedule: str = ""
    ) -> OrchestrationTask:
        request = ame_service_pb2.StartOrchestrationTaskRequest(
            orchestration=orchestration,
            name=name,
            json_args=json_args,
            timeout_seconds=timeout or 0.0,
            schedule=schedule,
        )
        response = self._call(self._stub.StartOrchestrationTask, request, timeout=self._timeout)
        return convert.orchestration_task_from_pb(response.task)

    def list_orchestration_tasks(self, *, killed: bool = False) -> list[OrchestrationTask]:
        request = ame_service_pb2.ListOrchestrationTasksRequest(killed=killed)
        response = self._call(self._stub.ListOrchestrationTasks, request, timeout=self._timeout)
        return [convert.orchestration_task_from_pb(pb) for pb in response.tasks]

    def get_orchestration_task(self, task_id: str) -> OrchestrationTask:
        request = ame_service_pb2.OrchestrationTaskRequest(task_id=task_id)
        response = self._call(self._stub.GetOrchestrationTask, request, timeout=self._timeout)
        return convert.orchestration_task_from_pb(response.task)

    def kill_orchestration_task(self, task_id: str, *, cancel: bool = False) -> OrchestrationTask:
        request = ame_service_pb2.KillOrchestrationTaskRequest(task_id=task_id, cancel=cancel)
        response = self._call(self._stub.KillOrchestrationTask, request, timeout=self._timeout)
        return convert.orchestration_task_from_pb(response.task)

    def orchestration_task_runs(self, task_id: str, *, status: str = "all", limit: int | None = None) -> list[TaskRun]:
        request = ame_service_pb2.ListOrchestrationTaskRunsRequest(task_id=task_id, status=status, limit=limit or 0)
        response = self._call(self._stub.ListOrchestrationTaskRuns, request, timeout=self._timeout)
        return [convert.task_run_from_pb(pb) for pb in response.runs]

    def log_lines_so_far(self, run_id: str, *, wait: float = 1.0) -> list[LogLine]:
        """The run's output as far as it goes now: a run that has ended gives all of it; one still going gives
        what arrives within `wait` seconds (lines reach followers within milliseconds of being printed)."""
        run = self.get_run(run_id)
        request = ame_service_pb2.FollowLogsRequest(run_id=run_id, batched=True)
        stream = self._stub.FollowLogs(request, timeout=None if run.state.terminal else wait)
        lines: list[LogLine] = []
        try:
            for event in stream:
                batch = convert.follow_batch(event)
                if isinstance(batch, LogEnd):
                    break
                lines.extend(batch)
        except grpc.RpcError as exc:
            if not (isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED):
                raise _translate(self.target, exc) from None
        finally:
            stream.cancel()
        return lines
