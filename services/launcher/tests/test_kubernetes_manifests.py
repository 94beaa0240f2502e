"""Every manifest the kubernetes backend generates passes kubernetes-validate in strict mode (Kubernetes 1.30),
plus the rules the schema cannot say: DNS-1123 names, label values, whole GPUs in limits."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest

from ame.bus_messages import LaunchCommand, ProjectSource
from ame.domain import RunSpec
from ame.domain.resources import Resources
from ame.domain.runs import EnvVar, ExecutorRef, SecretRef
from ame_launcher.kubernetes import manifests
from ame_launcher.kubernetes.settings import KubernetesSettings

_K8S_VERSION = "1.30"
_DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
RUN_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def _commands() -> list[LaunchCommand]:
    plain = RunSpec(command="echo hi")
    gpu = RunSpec(
        project="seed-001",
        task="train_my_model",
        command="python train.py",
        executor=ExecutorRef(kind="poetry", python_version="3.11"),
        resources=Resources(
            cpu_millis=4000,
            memory_bytes=10**10,
            storage_bytes=30 * 10**9,
            gpus=1,
            gpu_model="NVIDIA-H100-80GB-HBM3",
            gpu_memory_bytes=80 * 2**30,
        ),
        environment=[EnvVar(key="EPOCHS", value="3")],
        secrets=[SecretRef(key="blob_storage_key", inject_as="MY_BLOB_STORAGE_SECRET")],
        timeout_seconds=3600,
    )
    image = RunSpec(command="./run.sh", executor=ExecutorRef(kind="custom", image="ghcr.io/acme/trainer:1.2"))
    source = ProjectSource(manifest_key="org/default/versions/v.json", blob_prefix="org/default/blobs/")
    return [
        LaunchCommand(RUN_ID, 1, "default", plain),
        LaunchCommand(RUN_ID, 3, "acme_corp.eu", gpu, source),
        LaunchCommand(RUN_ID, 2, "default", image),
    ]


def _settings() -> KubernetesSettings:
    return KubernetesSettings(
        namespace="ame-runs", image_pull_secrets=["registry"], cache_volume_claim="ame-env-cache", service_account="run"
    )


@pytest.mark.parametrize("command", _commands(), ids=["plain", "gpu", "image"])
def test_the_pod_and_its_secret_pass_strict_schema_validation(command: LaunchCommand) -> None:
    settings = _settings()
    pod = manifests.pod_manifest(
        command,
        settings,
        secret_keys=[(ref.inject_as, f"env-{ref.inject_as}") for ref in command.spec.secrets],
        gpu_model=command.spec.resources.gpu_model,
        grace_seconds=10,
    )
    secret = manifests.secret_manifest(
        command, settings, plan={"files": []}, values={"env-X": "v"}, owner_uid="6a1f8a2e-0000-4000-8000-000000000001"
    )
    for manifest in (pod, secret):
        kubernetes_validate.validate(manifest, _K8S_VERSION, strict=True)
        assert _DNS_1123.match(manifest["metadata"]["name"]), manifest["metadata"]["name"]
        assert len(manifest["metadata"]["name"]) <= 63
        for value in manifest["metadata"]["labels"].values():
            assert _LABEL_VALUE.match(value) and len(value) <= 63, value
    main = pod["spec"]["containers"][0]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    if command.spec.resources.gpus:
        limits, requests = main["resources"]["limits"], main["resources"]["requests"]
        assert limits["nvidia.com/gpu"] == requests["nvidia.com/gpu"] == "1"
        assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        # vram: nodes whose GPUs have at least 80Gi (GPU feature discovery's label is in MiB).
        required = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert required == {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["81919"]}]}
            ]
        }
        assert pod["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert pod["spec"]["activeDeadlineSeconds"] == 3600
        # A secret value travels in the Secret only, referenced from the pod.
        assert {
            "name": "MY_BLOB_STORAGE_SECRET",
            "valueFrom": {"secretKeyRef": {"name": secret["metadata"]["name"], "key": "env-MY_BLOB_STORAGE_SECRET"}},
        } in main["env"]
    if command.spec.executor.image:
        assert main["image"] == "ghcr.io/acme/trainer:1.2"
    if command.spec.executor.python_version:
        assert main["image"] == "python:3.11-slim"  # the version the task names
    if not command.spec.resources.gpu_memory_bytes:
        assert "affinity" not in pod["spec"]


def test_a_pod_carries_its_launch_command_for_whoever_adopts_it() -> None:
    command = _commands()[1]
    pod = manifests.pod_manifest(command, _settings(), secret_keys=[], gpu_model=None, grace_seconds=0)
    decoded = manifests.decode_command(pod["metadata"]["annotations"][manifests.ANNOTATION_LAUNCH])
    assert decoded == command
    assert pod["metadata"]["labels"][manifests.LABEL_RUN] == RUN_ID
    assert pod["metadata"]["labels"][manifests.LABEL_ATTEMPT] == "3"


def test_a_misspelt_field_fails_the_strict_check() -> None:
    pod = manifests.pod_manifest(_commands()[0], _settings(), secret_keys=[], gpu_model=None, grace_seconds=0)
    pod["spec"]["restartPolicyy"] = "Never"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, _K8S_VERSION, strict=True)
