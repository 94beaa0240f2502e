"""The launcher service assembled: the launch consumer with its backend, heartbeats and reconciler."""

from __future__ import annotations

from ame_launcher.backends.local import LocalBackend
from ame_launcher.kubernetes.backend import KubernetesBackend, StillLeased
from ame_launcher.launches import Launcher
from ame_launcher.repositories import leases
from ame_launcher.settings import LauncherSettings
from ame_platform.lifecycle import Component, Periodic
from ame_platform.runtime import Runtime

SERVICE = "launcher"
MIGRATIONS = "ame_launcher"


def leased_attempts(runtime: Runtime) -> StillLeased:
    """The attempts among those asked about whose lease is active (the pod GC leaves their pods alone)."""

    async def still_leased(attempts: list[tuple[str, int]]) -> set[tuple[str, int]]:
        async with runtime.pool.acquire() as conn:
            return await leases.active_among(conn, attempts)

    return still_leased


def build(settings: LauncherSettings, runtime: Runtime) -> Launcher:
    if settings.backend == "kubernetes":
        return Launcher(runtime, settings, KubernetesBackend(settings))
    return Launcher(runtime, settings, LocalBackend(settings))


def build_components(settings: LauncherSettings, runtime: Runtime) -> list[Component]:
    if settings.backend == "kubernetes":
        kube = KubernetesBackend(settings)
        return [
            Launcher(runtime, settings, kube),
            Periodic("kubernetes-pod-gc", settings.gc_interval, lambda: kube.collect_garbage(leased_attempts(runtime))),
        ]
    backend = LocalBackend(settings)
    components: list[Component] = [Launcher(runtime, settings, backend)]
    if settings.content_cache_retention is not None:
        components.append(Periodic("content-cache-retention", settings.retention_interval, backend.prune_content_cache))
    return components
