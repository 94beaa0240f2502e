"""The pod and Secret of a run attempt, as plain wire-form dicts (camelCase, as the API server takes them).

Pure functions of the launch command and the settings: the same attempt always gives the same names and
labels, which is what lets a create that races a crash (409) and a restarted launcher find the pod again.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

from ame import bus_messages
from ame.bus_messages import LaunchCommand
from ame_launcher.kubernetes import bootstrap
from ame_launcher.kubernetes.settings import KubernetesSettings

MANAGED_BY = "ame-launcher"
LABEL_RUN = "ame.run-id"
LABEL_ATTEMPT = "ame.attempt"
LABEL_PROJECT = "ame.project"
LABEL_TASK = "ame.task"
LABEL_ORGANISATION = "ame.organisation"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
# The launch command itself, so that whichever launcher adopts the pod knows the run it belongs to.
ANNOTATION_LAUNCH = "ame.launch"

# Where the pod's volumes are mounted; the runner and the fetch script take them from the environment, so a
# test kubelet can mount them elsewhere.
WORK_MOUNT = "/ame"
PLAN_MOUNT = "/ame-plan"
CACHE_MOUNT = "/ame-cache"
MAIN = "main"
FETCH = "fetch"

_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class PodNames:
    pod: str
    secret: str


def names(run_id: str, attempt: int) -> PodNames:
    pod = f"ame-{run_id.lower()}-{attempt}"
    return PodNames(pod=pod, secret=f"{pod}-run")


def label_value(text: str) -> str:
    """A label value: at most 63 characters of [A-Za-z0-9_.-], starting and ending alphanumeric (or empty)."""
    value = _LABEL_VALUE.sub("_", text)[:63]
    return value.strip("_.-")


def labels(command: LaunchCommand) -> dict[str, str]:
    return {
        LABEL_MANAGED: MANAGED_BY,
        LABEL_RUN: command.run_id,
        LABEL_ATTEMPT: str(command.attempt),
        LABEL_PROJECT: label_value(command.spec.project),
        LABEL_TASK: label_value(command.spec.task),
        LABEL_ORGANISATION: label_value(command.organisation),
    }


def encode_command(command: LaunchCommand) -> str:
    # Every field of the command: an adopter acts on what it decodes here, so a field left out would be dropped.
    payload = bus_messages.encode_launch(
        command.run_id,
        command.attempt,
        command.organisation,
        command.spec,
        command.project_source,
        data_sets=command.data_sets,
        data_set_output=command.data_set_output,
    )
    return base64.b64encode(payload).decode()


def decode_command(annotation: str) -> LaunchCommand:
    """Raises bus_messages.DecodeError (or ValueError for bad base64)."""
    return bus_messages.parse_launch(base64.b64decode(annotation, validate=True))


def image_for(command: LaunchCommand, settings: KubernetesSettings) -> str:
    executor = command.spec.executor
    if executor.image:
        return executor.image
    if executor.python_version:
        # The Python the task asks for, as `-l` picks that interpreter: an image of that version.
        return settings.python_image.format(version=executor.python_version)
    return settings.images.get(str(executor.kind), settings.init_image)


def pod_manifest(
    command: LaunchCommand,
    settings: KubernetesSettings,
    *,
    secret_keys: list[tuple[str, str]],
    gpu_model: str | None,
    grace_seconds: int,
    launcher_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The run attempt's pod. `secret_keys` are (environment variable, key in the run's Secret) pairs;
    `launcher_env` what the launcher gives every run (MLflow, the api's address) unless the run sets it itself."""
    spec = command.spec
    pod_names = names(command.run_id, command.attempt)
    env: list[dict[str, Any]] = [
        {"name": "AME_IN_TASK", "value": "1"},
        {"name": "AME_RUN_ID", "value": command.run_id},
        {"name": "AME_RUN_ATTEMPT", "value": str(command.attempt)},
        {"name": "AME_PROJECT", "value": spec.project},
        {"name": "AME_TASK", "value": spec.task},
        {"name": "AME_TASK_NAME", "value": spec.task},  # the name `-l` gives it
        {"name": bootstrap.ENV_WORK, "value": WORK_MOUNT},
        {"name": bootstrap.ENV_PLAN, "value": PLAN_MOUNT},
        {"name": bootstrap.ENV_CACHE, "value": CACHE_MOUNT},
    ]
    own = {var.key for var in spec.environment} | {name for name, _ in secret_keys}
    env.extend({"name": k, "value": v} for k, v in sorted((launcher_env or {}).items()) if k not in own)
    env.extend({"name": var.key, "value": var.value} for var in spec.environment)
    env.extend(
        {"name": name, "valueFrom": {"secretKeyRef": {"name": pod_names.secret, "key": key}}}
        for name, key in secret_keys
    )
    mounts = [
        {"name": "work", "mountPath": WORK_MOUNT},
        {"name": "plan", "mountPath": PLAN_MOUNT, "readOnly": True},
    ]
    container_security = {
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "runAsUser": settings.run_as_user,
        "capabilities": {"drop": ["ALL"]},
    }
    main: dict[str, Any] = {
        "name": MAIN,
        "image": image_for(command, settings),
        "command": [settings.runner_python, f"{WORK_MOUNT}/{bootstrap.RUNNER_FILE}"],
        "workingDir": f"{WORK_MOUNT}/{bootstrap.PROJECT_DIR}",
        "env": env,
        "volumeMounts": [*mounts, {"name": "cache", "mountPath": CACHE_MOUNT}],
        "securityContext": container_security,
    }
    if resources := spec.resources.to_kubernetes():
        main["resources"] = resources
    init: dict[str, Any] = {
        "name": FETCH,
        "image": settings.init_image,
        "command": ["python3", "-c", bootstrap.FETCH_SCRIPT],
        "env": [
            {"name": bootstrap.ENV_WORK, "value": WORK_MOUNT},
            {"name": bootstrap.ENV_PLAN, "value": PLAN_MOUNT},
        ],
        "volumeMounts": mounts,
        "securityContext": container_security,
    }
    cache: dict[str, Any] = (
        {"name": "cache", "persistentVolumeClaim": {"claimName": settings.cache_volume_claim}}
        if settings.cache_volume_claim
        else {"name": "cache", "emptyDir": {}}
    )
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": grace_seconds,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "fsGroup": settings.run_as_user,
        },
        "initContainers": [init],
        "containers": [main],
        "volumes": [
            {"name": "work", "emptyDir": {}},
            {"name": "plan", "secret": {"secretName": pod_names.secret, "defaultMode": 0o440}},
            cache,
        ],
    }
    if spec.timeout_seconds is not None:
        pod_spec["activeDeadlineSeconds"] = max(1, int(spec.timeout_seconds))
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in settings.image_pull_secrets]
    if spec.resources.gpus:
        pod_spec["tolerations"] = [dict(t) for t in settings.gpu_tolerations]
    if gpu_model:
        pod_spec["nodeSelector"] = {settings.gpu_model_label: gpu_model}
    if spec.resources.gpus and spec.resources.gpu_memory_bytes:
        # GPU feature discovery labels a node with each GPU's memory in MiB, as the driver reports it; `Gt` is
        # strict, so one MiB below what the task asks for.
        mib = -(-spec.resources.gpu_memory_bytes // 2**20)
        wanted = {"key": settings.gpu_memory_label, "operator": "Gt", "values": [str(mib - 1)]}
        required = {"nodeSelectorTerms": [{"matchExpressions": [wanted]}]}
        pod_spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_names.pod,
            "namespace": settings.namespace,
            "labels": labels(command),
            "annotations": {ANNOTATION_LAUNCH: encode_command(command)},
        },
        "spec": pod_spec,
    }


def secret_manifest(
    command: LaunchCommand,
    settings: KubernetesSettings,
    *,
    plan: dict[str, Any],
    values: dict[str, str],
    owner_uid: str | None,
) -> dict[str, Any]:
    """The run's Secret: the plan (its files' URLs, the task) and the secret values, owned by the pod."""
    pod_names = names(command.run_id, command.attempt)
    data = {bootstrap.PLAN_FILE: json.dumps(plan, sort_keys=True), **values}
    metadata: dict[str, Any] = {
        "name": pod_names.secret,
        "namespace": settings.namespace,
        "labels": labels(command),
    }
    if owner_uid:
        # Deleted with the pod by the garbage collector, whoever deletes the pod.
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Pod", "name": pod_names.pod, "uid": owner_uid, "blockOwnerDeletion": False}
        ]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata,
        "stringData": data,
    }
