"""The launcher service assembled: the launch consumer with its backend, heartbeats and reconciler."""

from __future__ import annotations

from ame_launcher.backends.local import LocalBackend
from ame_launcher.kubernetes.backend import KubernetesBackend
from ame_launcher.launches import Launcher
from ame_launcher.settings import LauncherSettings
from ame_platform.lifecycle import Component, Periodic
from ame_platform.runtime import Runtime

SERVICE = "launcher"
MIGRATIONS = "ame_launcher"


def build(settings: LauncherSettings, runtime: Runtime) -> Launcher:
    if settings.backend == "kubernetes":
        return Launcher(runtime, settings, KubernetesBackend(settings))
    return Launcher(runtime, settings, LocalBackend(settings))


def build_components(settings: LauncherSettings, runtime: Runtime) -> list[Component]:
    if settings.backend == "kubernetes":
        kube = KubernetesBackend(settings)
        return [
            Launcher(runtime, settings, kube),
            Periodic("kubernetes-pod-gc", settings.gc_interval, kube.collect_garbage),
        ]
    backend = LocalBackend(settings)
    components: list[Component] = [Launcher(runtime, settings, backend)]
    if settings.content_cache_retention is not None:
        components.append(Periodic("content-cache-retention", settings.retention_interval, backend.prune_content_cache))
    return components
