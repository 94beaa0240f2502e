"""The kubernetes backend: each run attempt is one pod in the configured namespace.

Launching: the pod first (deterministic name, so a create whose answer was lost, a 500 after the write or a
409, all end in the same pod), then its Secret (the plan the init container and the runner read, and the
run's secret values), owned by the pod so the cluster deletes it with the pod. A 403 from a ResourceQuota
waits and tries again, saying why in the run's log.

Watching: every run waits on its pod's latest state from one shared watch (watcher.py); its log follows into
the run's log (podlogs.py). A pod that cannot be scheduled, or whose image cannot be pulled, says so in the log
and fails after the configured time. Cancel deletes the pod with the grace period, and its Secret.

Adoption: a pod carries its launch command (an annotation), so a launcher that took over an expired lease
(the launcher fences that with the lease) attaches to it: it follows the pod from where the run's log stands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from ame import bus_messages
from ame.bus_messages import LaunchCommand
from ame.domain import PIPELINE_PARENT_LABEL, RunState
from ame.domain.artifacts import run_prefix
from ame.domain.executors import ExecutorKind
from ame.runner.local_resources import gpu_kind_without_gpus
from ame_launcher.backends import RunResult
from ame_launcher.content_cache import MaterialiseError
from ame_launcher.kubernetes import bootstrap, manifests, pod_artifacts, pod_status
from ame_launcher.kubernetes.kubeapi import ApiException, KubeApi, error_message
from ame_launcher.kubernetes.podlogs import LogFollower, LogPosition, parse_timestamp, rfc3339
from ame_launcher.kubernetes.watcher import PodState, PodWatcher
from ame_launcher.logsink import ChunkPublisher
from ame_launcher.project_versions import VersionReader
from ame_launcher.run_secrets import RunSecrets
from ame_launcher.settings import LauncherSettings
from ame_launcher.store_retries import retrying
from ame_platform.storage import S3ObjectStore

log = logging.getLogger(__name__)

_RUNNER_KEY = "ame-runner/{sha}.pyz"
# How long a cancelled pod may take to go, beyond its grace period, before the run is reported anyway.
_DELETE_MARGIN = 30.0


class PlanError(Exception):
    """The run cannot be given its files (said in its log; the run fails)."""


# Executors whose environment the pod's runner builds; the others would run their command without it.
_POD_EXECUTORS = frozenset({ExecutorKind.PIP, ExecutorKind.CUSTOM})
_USE_LOCAL = "run with the local backend"


# Which of these (run id, attempt) pairs still have an active lease.
StillLeased = Callable[[list[tuple[str, int]]], Awaitable[set[tuple[str, int]]]]


def unsupported(command: LaunchCommand) -> str | None:
    """Why a pod cannot run the command as asked, or None: a setting the pod would ignore fails the run at once."""
    spec = command.spec
    if command.data_sets:
        return f"data sets are not supported on the kubernetes backend yet: {_USE_LOCAL}"
    if command.data_set_output is not None:
        return f"producing a data set is not supported on the kubernetes backend yet: {_USE_LOCAL}"
    if spec.pipeline:
        return f"a pipeline run is not supported on the kubernetes backend yet: {_USE_LOCAL}"
    if (spec.resources.gpu_memory_bytes or spec.resources.gpu_model) and not spec.resources.gpus:
        return gpu_kind_without_gpus()
    if spec.executor.kind not in _POD_EXECUTORS:
        return (
            f"the {spec.executor.kind} executor is not supported on the kubernetes backend yet (only pip and custom): "
            f"{_USE_LOCAL}"
        )
    return None


def saves_files(command: LaunchCommand) -> bool:
    """Whether the pod's runner saves files (declared artifacts, or every new or changed one) to be indexed."""
    return bool(command.spec.artifacts.paths) or command.spec.artifacts.save_changed_files


class KubernetesBackend:
    name = "kubernetes"
    adopts = True

    def __init__(self, settings: LauncherSettings, api: KubeApi | None = None) -> None:
        self._settings = settings
        self.kube = settings.kubernetes
        self._api = api
        self._opening = asyncio.Lock()
        self._watcher: PodWatcher | None = None
        self._versions = VersionReader(settings)
        self._runner_url: tuple[str, float] | None = None
        self._in_hand: set[str] = set()
        self.created = 0

    async def api(self) -> KubeApi:
        async with self._opening:
            if self._api is None:
                self._api = await KubeApi.open(self.kube)
            if self._watcher is None:
                self._watcher = PodWatcher(self._api, self.kube)
            return self._api

    @property
    def watcher(self) -> PodWatcher:
        assert self._watcher is not None
        return self._watcher

    async def close(self) -> None:
        if self._watcher is not None:
            await self._watcher.close()
        if self._api is not None:
            await self._api.close()
        await self._versions.close()

    # The launch -------------------------------------------------------------------------------------------

    async def execute(
        self,
        command: LaunchCommand,
        output: ChunkPublisher,
        cancel: asyncio.Event,
        on_started: Callable[[int | None], Awaitable[None]],
    ) -> RunResult:
        api = await self.api()
        pod_names = manifests.names(command.run_id, command.attempt)
        state = self.watcher.subscribe(pod_names.pod)
        self._in_hand.add(pod_names.pod)
        try:
            if refusal := unsupported(command):
                await output.write("system", f"ame: {refusal}")
                return RunResult(RunState.FAILED, None, refusal)
            try:
                plan, values = await self._plan(command)
            except PlanError as exc:
                await output.write("system", f"ame: {exc}")
                return RunResult(RunState.FAILED, None, str(exc))
            pod = await self._create_pod(api, command, sorted(values), output, cancel)
            if pod is None:
                return RunResult(RunState.CANCELLED, None, "cancelled before its pod was created")
            owner = (pod.get("metadata") or {}).get("uid")
            secret = manifests.secret_manifest(command, self.kube, plan=plan, values=values, owner_uid=owner)
            await self._retry_api(lambda: api.create_secret(secret), cancel)
            if state.pod is None:
                state.update(pod)
            # The runner numbers its lines from 0: a first line numbered above is a gap too.
            result = await self._follow(api, command, state, output, cancel, on_started, LogPosition(next_seq=0))
            return await self._indexed(command, output, result)
        finally:
            self.watcher.unsubscribe(pod_names.pod)
            self._in_hand.discard(pod_names.pod)

    async def attach(
        self,
        command: LaunchCommand,
        output: ChunkPublisher,
        cancel: asyncio.Event,
        on_started: Callable[[int | None], Awaitable[None]],
        resume_at_ns: int,
    ) -> RunResult:
        """Follow a pod another launcher created, its log from after `resume_at_ns`."""
        position = LogPosition(timestamp_ns=resume_at_ns, timestamp=rfc3339(resume_at_ns) if resume_at_ns else "")
        api = await self.api()
        pod_names = manifests.names(command.run_id, command.attempt)
        state = self.watcher.subscribe(pod_names.pod)
        self._in_hand.add(pod_names.pod)
        try:
            pod = await api.read_pod(pod_names.pod)
            if pod is None:
                return RunResult(RunState.LOST, None, "the run's pod is gone")
            unstarted = not pod_status.progress(pod).started and pod_status.outcome(pod) is None
            if unstarted and await api.read_secret(pod_names.secret) is None:
                # Its launcher stopped between creating the pod and its Secret: the pod can never start (the
                # Secret is its plan volume). Lost, so the run is tried again as a new attempt.
                reason = "the run's pod never got its Secret (its launcher stopped before making it)"
                await output.write("system", f"ame: {reason}; deleted pod {pod_names.pod}")
                await self._delete(api, pod_names, grace=0)
                return RunResult(RunState.LOST, None, reason)
            if state.pod is None:
                state.update(pod)
            await output.write("system", f"ame: adopted pod {pod_names.pod}", resume_at_ns or None)
            result = await self._follow(api, command, state, output, cancel, on_started, position)
            return await self._indexed(command, output, result)
        finally:
            self.watcher.unsubscribe(pod_names.pod)
            self._in_hand.discard(pod_names.pod)

    async def find(self, run_id: str, attempt: int) -> LaunchCommand | None:
        """The launch command of the attempt's pod, or None when it has no pod (or one AME did not make)."""
        api = await self.api()
        pod = await api.read_pod(manifests.names(run_id, attempt).pod)
        if pod is None:
            return None
        annotation = ((pod.get("metadata") or {}).get("annotations") or {}).get(manifests.ANNOTATION_LAUNCH)
        if not annotation:
            return None
        try:
            command = manifests.decode_command(annotation)
        except (bus_messages.DecodeError, ValueError):
            return None
        return command if (command.run_id, command.attempt) == (run_id, attempt) else None

    async def _plan(self, command: LaunchCommand) -> tuple[dict[str, Any], dict[str, str]]:
        spec = command.spec
        store = await self._versions.store()
        if not isinstance(store, S3ObjectStore):
            raise PlanError(
                "the kubernetes backend needs an S3 object store (AME_STORAGE_BACKEND=s3) for pods to fetch from"
            )
        ttl = int(self.kube.presign_ttl)
        if spec.project_version_id and command.project_source is None:
            raise PlanError(f"the launch command does not say where version {spec.project_version_id} lies")
        try:
            # A pipeline step's files are the version's with the earlier steps' saved files laid over them, the
            # very list the local backend places (`layered_files`); an executable bit comes from the version only.
            placed = await self._versions.layered_files(
                spec.project_version_id, command.project_source, command.organisation, spec.layers
            )
        except MaterialiseError as exc:
            raise PlanError(str(exc)) from None
        files: list[dict[str, Any]] = [
            {
                "path": entry.path,
                "url": await store.presigned_get(key, ttl),
                "sha256": entry.sha256,
                "executable": bool(entry.mode & 0o111),
            }
            for entry, key in placed
        ]
        if spec.input_run_id:
            # Placed over the project's files, as the local backend does (a later entry wins its path).
            try:
                files.extend(await pod_artifacts.input_files(store, command.organisation, spec.input_run_id, ttl))
            except ValueError as exc:
                raise PlanError(f"the artifacts of run {spec.input_run_id} are unreadable: {exc}") from None
        values: dict[str, str] = {}
        if spec.secrets:
            secrets = RunSecrets(
                self._settings.api_target,
                self._settings.api_token,
                command.organisation,
                command.run_id,
                command.attempt,
                self._settings.api_timeout,
                tls=self._settings.api_tls,
                ca_file=self._settings.api_ca_file,
            )
            from ame.runner import SecretError

            for ref in spec.secrets:
                try:
                    value = await secrets.lookup(ref.vault, ref.key)
                except SecretError as exc:
                    raise PlanError(str(exc)) from None
                if value is None:
                    raise PlanError(f"secret {ref.key!r} is not set")
                values[f"env-{ref.inject_as}"] = value
        plan = {
            "runner_url": await self._runner(store, ttl),
            "files": files,
            # The data-set hook: entries {"name", "files": [{"path", "url", "sha256"}]} land under /ame/data/<name>.
            # Empty: a run with data sets is refused before its plan (`unsupported`).
            "data_sets": [],
            "artifacts": (
                await pod_artifacts.upload_form(store, command.organisation, command.run_id, command.attempt, ttl)
                if saves_files(command)
                else None
            ),
            "task": {
                "command": spec.command,
                "executor": str(spec.executor.kind),
                "args": spec.args,
                "artifact_paths": [str(p) for p in spec.artifacts.paths],
                # Every new or changed file is saved too (a pipeline step's files for the steps after it).
                "save_changed_files": spec.artifacts.save_changed_files,
                # The variables holding secret values, which the runner masks in the output as `-l` does.
                "secret_env": sorted(ref.inject_as for ref in spec.secrets),
            },
        }
        return await self._placed_plan(store, command, plan, ttl), values

    async def _placed_plan(
        self, store: S3ObjectStore, command: LaunchCommand, plan: dict[str, Any], ttl: int
    ) -> dict[str, Any]:
        """The plan as the Secret carries it: itself, or (over `plan_inline_max`: a version of thousands of files,
        large task arguments) a URL to it in the object store, which the init container fetches. A Secret holds
        at most 1 MiB, and a plan over it would fail the run at the API."""
        text = json.dumps(plan, sort_keys=True).encode()
        if len(text) <= self.kube.plan_inline_max:
            return plan
        key = f"{run_prefix(command.organisation, command.run_id)}pod-plans/{command.attempt}.json"
        await retrying(
            self._settings,
            lambda: store.put_bytes(key, text),
            what="storing the pod's plan",
            gave_up=lambda tries, detail: PlanError(f"could not store the pod's plan after {tries} tries: {detail}"),
        )
        return {"plan_url": await store.presigned_get(key, ttl)}

    async def _indexed(self, command: LaunchCommand, output: ChunkPublisher, result: RunResult) -> RunResult:
        """The result, once the artifacts the pod uploaded are indexed (a failure to index fails the run)."""
        if not saves_files(command):
            return result
        store = await self._versions.store()
        if not isinstance(store, S3ObjectStore):
            return result
        try:
            await pod_artifacts.write_index(
                store,
                command.organisation,
                command.run_id,
                command.attempt,
                # A pipeline step's index is written even when empty, as the local backend writes it: later steps
                # then tell "saved nothing" from "removed by retention".
                always=PIPELINE_PARENT_LABEL in command.spec.labels,
            )
        except Exception as exc:
            reason = f"the run's artifacts could not be indexed: {exc}"
            await output.write("system", f"ame: {reason}")
            return (
                RunResult(RunState.FAILED, result.exit_code, reason) if result.state == RunState.SUCCEEDED else result
            )
        return result

    async def _runner(self, store: S3ObjectStore, ttl: int) -> str:
        if self._runner_url is not None and self._runner_url[1] > time.monotonic():
            return self._runner_url[0]
        import hashlib

        data = bootstrap.runner_zipapp()
        key = _RUNNER_KEY.format(sha=hashlib.sha256(data).hexdigest())
        if not await store.exists(key):
            await store.put_bytes(key, data, "application/zip")
        url = await store.presigned_get(key, ttl)
        self._runner_url = (url, time.monotonic() + ttl / 2)
        return url

    async def _create_pod(
        self,
        api: KubeApi,
        command: LaunchCommand,
        secret_keys: list[str],
        output: ChunkPublisher,
        cancel: asyncio.Event,
    ) -> dict[str, Any] | None:
        """Create the attempt's pod, or find the one an earlier try made; None if cancelled first."""
        body = manifests.pod_manifest(
            command,
            self.kube,
            secret_keys=[(key.removeprefix("env-"), key) for key in secret_keys],
            gpu_model=command.spec.resources.gpu_model,
            grace_seconds=max(0, int(self._settings.grace_period)),
            launcher_env=self._run_environment(),
        )
        name = body["metadata"]["name"]
        said = ""
        while not cancel.is_set():
            try:
                pod = await api.create_pod(body)
                self.created += 1
                return pod
            except ApiException as exc:
                if exc.status == 409:
                    existing = await api.read_pod(name)
                    if existing is not None:
                        return existing  # made by an earlier try of this attempt: adopt it
                    continue
                if exc.status == 403 and "quota" in error_message(exc).lower():
                    reason = f"waiting for quota: {error_message(exc)}"
                    if reason != said:
                        await output.write("system", f"ame: {reason}")
                        said = reason
                    await _wait(cancel, self.kube.quota_retry_interval)
                    continue
                if exc.status is not None and exc.status < 500 and exc.status != 429:
                    raise
                failure: Exception = exc
            except (OSError, TimeoutError) as exc:
                failure = exc
            # The write may have happened though the answer was lost: look before trying again.
            log.info("creating pod %s: %s; checking whether it exists", name, failure)
            with contextlib.suppress(ApiException, OSError, TimeoutError):
                existing = await api.read_pod(name)
                if existing is not None:
                    return existing
            await _wait(cancel, self.kube.reconnect_delay)
        return None

    def _run_environment(self) -> dict[str, str]:
        """What the local backend gives every run too: MLflow's address, and where `ame.Client()` reaches the api."""
        env: dict[str, str] = {}
        if self._settings.mlflow.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = self._settings.mlflow.tracking_uri
        if self._settings.api_target:
            env["AME_GRPC_TARGET"] = self._settings.api_target
            if self._settings.api_tls:
                env["AME_GRPC_TLS"] = "1"
        return env

    async def _retry_api(self, action: Callable[[], Awaitable[None]], cancel: asyncio.Event) -> None:
        for attempt in range(6):
            try:
                await action()
                return
            except ApiException as exc:
                if (exc.status is not None and exc.status < 500) or attempt == 5:
                    raise
            except (OSError, TimeoutError):
                if attempt == 5:
                    raise
            await _wait(cancel, self.kube.reconnect_delay * 2**attempt)

    # Following the pod ------------------------------------------------------------------------------------

    async def _follow(
        self,
        api: KubeApi,
        command: LaunchCommand,
        state: PodState,
        output: ChunkPublisher,
        cancel: asyncio.Event,
        on_started: Callable[[int | None], Awaitable[None]],
        position: LogPosition,
    ) -> RunResult:
        pod_names = manifests.names(command.run_id, command.attempt)
        ended = asyncio.Event()
        follower = LogFollower(api, pod_names.pod, output, position, self.kube.reconnect_delay)
        following: asyncio.Task[None] | None = None
        started = False
        pending_since = time.monotonic()
        said: set[str] = set()
        result: RunResult | None = None
        try:
            while result is None:
                if cancel.is_set():
                    return await self._cancel(api, pod_names, state)
                pod = state.pod
                if state.deleted:
                    result = RunResult(RunState.LOST, None, "the run's pod was deleted (its node went away?)")
                    break
                if pod is not None:
                    ending = pod_status.outcome(pod)
                    now = pod_status.progress(pod)
                    if now.started and not started:
                        started = True
                        await on_started(None)
                    if now.started and following is None:
                        following = asyncio.create_task(follower.follow(ended), name=f"podlog:{pod_names.pod}")
                    if ending is not None:
                        result = RunResult(ending.state, ending.exit_code, ending.reason)
                        break
                    stuck = now.hopeless or now.image_pull or now.unschedulable
                    if not now.started and stuck:
                        if stuck not in said:
                            said.add(stuck)
                            await output.write("system", f"ame: pod pending: {stuck}")
                        limit = self.kube.image_pull_timeout if now.image_pull else self.kube.pending_timeout
                        if now.hopeless or time.monotonic() - pending_since > limit:
                            await self._delete(api, pod_names, grace=0)
                            result = RunResult(RunState.FAILED, None, f"the pod could not start: {stuck}")
                            break
                    elif not now.started:
                        pending_since = min(pending_since, time.monotonic())
                state.changed.clear()
                waiters = [asyncio.ensure_future(state.changed.wait()), asyncio.ensure_future(cancel.wait())]
                try:
                    await asyncio.wait(waiters, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()
            ended.set()
            if following is not None:
                await following
            elif result.state != RunState.LOST and state.pod is not None:
                # Ended before it was seen running (a short task): read its whole log once.
                following = asyncio.create_task(follower.follow(ended))
                await following
            if result.state == RunState.FAILED and not started:
                await self._report_init_log(api, pod_names.pod, output)
            return result
        finally:
            if following is not None and not following.done():
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)

    async def _report_init_log(self, api: KubeApi, pod: str, output: ChunkPublisher) -> None:
        with contextlib.suppress(ApiException, OSError, TimeoutError):
            async for raw in api.pod_log(pod, manifests.FETCH, follow=False):
                await output.write("system", f"fetch: {raw.partition(' ')[2]}")

    async def _cancel(self, api: KubeApi, pod_names: manifests.PodNames, state: PodState) -> RunResult:
        grace = max(0, int(self._settings.grace_period))
        await self._delete(api, pod_names, grace=grace)
        deadline = time.monotonic() + grace + _DELETE_MARGIN
        while not state.deleted and time.monotonic() < deadline:
            state.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.changed.wait(), timeout=1.0)
            if state.pod is not None and pod_status.outcome(state.pod) is not None:
                break
        return RunResult(RunState.CANCELLED, None, "cancelled")

    async def _delete(self, api: KubeApi, pod_names: manifests.PodNames, *, grace: int) -> None:
        with contextlib.suppress(ApiException, OSError, TimeoutError):
            await api.delete_pod(pod_names.pod, grace)
        # Owned by the pod, so the cluster deletes it too; deleted here as well so it goes at once.
        with contextlib.suppress(ApiException, OSError, TimeoutError):
            await api.delete_secret(pod_names.secret)

    # Garbage collection -----------------------------------------------------------------------------------

    async def collect_garbage(self, still_leased: StillLeased | None = None) -> int:
        """Delete finished pods (and their Secrets) older than the GC delay that no run here still follows and
        whose attempt's lease is no longer active (`still_leased`): a pod that ended while its launcher was away
        is left for the launcher that adopts it, however long ago it ended."""
        api = await self.api()
        pods, _ = await api.list_pods()
        now = time.time()
        old: list[tuple[str, tuple[str, int]]] = []
        unlabelled: list[str] = []
        for pod in pods:
            name = pod["metadata"]["name"]
            if name in self._in_hand or pod_status.outcome(pod) is None:
                continue
            age = finished_age(pod, now)
            if age is None or age < self.kube.gc_delay:
                continue  # a pod that does not say when it ended is left alone, never taken as long finished
            labels = pod["metadata"].get("labels") or {}
            try:
                run_id = str(uuid.UUID(str(labels.get(manifests.LABEL_RUN, ""))))
                attempt = int(str(labels.get(manifests.LABEL_ATTEMPT, "")))
            except ValueError:
                # One of ours (the selector says so) whose run labels were edited away: no lease can name it.
                unlabelled.append(name)
                continue
            old.append((name, (run_id, attempt)))
        leased = await still_leased([key for _, key in old]) if still_leased is not None and old else set()
        removed = 0
        for name, key in old:
            if key in leased:
                continue
            secret = manifests.names(*key).secret
            await self._delete(api, manifests.PodNames(pod=name, secret=secret), grace=0)
            removed += 1
        for name in unlabelled:
            log.warning("pod %s has no readable run labels; deleting it as finished and past the GC delay", name)
            with contextlib.suppress(ApiException, OSError, TimeoutError):
                await api.delete_pod(name, 0)
            removed += 1
        return removed


def finished_age(pod: dict[str, Any], now: float) -> float | None:
    """Seconds since a finished pod ended (see pod_status.ended_at), or None when its object does not tell."""
    ended = pod_status.ended_at(pod)
    if not ended:
        return None
    try:
        return now - parse_timestamp(ended) / 1e9
    except ValueError:
        return None


async def _wait(cancel: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(cancel.wait(), timeout=seconds)
