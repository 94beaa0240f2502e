"""The launcher service assembled: the launch consumer with its backend, heartbeats and reconciler."""

from __future__ import annotations

from ame_launcher.backends.local import LocalBackend
from ame_launcher.launches import Launcher
from ame_launcher.settings import LauncherSettings
from ame_platform.lifecycle import Component, Periodic
from ame_platform.runtime import Runtime

SERVICE = "launcher"
MIGRATIONS = "ame_launcher"


def build(settings: LauncherSettings, runtime: Runtime) -> Launcher:
    return Launcher(runtime, settings, LocalBackend(settings))


def build_components(settings: LauncherSettings, runtime: Runtime) -> list[Component]:
    backend = LocalBackend(settings)
    components: list[Component] = [Launcher(runtime, settings, backend)]
    if settings.content_cache_retention is not None:
        components.append(Periodic("content-cache-retention", settings.retention_interval, backend.prune_content_cache))
    return components
