"""`ame-launcher` / `python -m ame_launcher`: serve | migrate | check-config."""

from __future__ import annotations

from ame_launcher.app import MIGRATIONS, SERVICE, build_components
from ame_launcher.settings import LauncherSettings
from ame_platform.service_main import ServiceDefinition
from ame_platform.service_main import main as service_main

DEFINITION = ServiceDefinition(
    name=SERVICE, settings_factory=LauncherSettings, migrations_package=MIGRATIONS, build=build_components
)


def main() -> int:
    return service_main(DEFINITION)


if __name__ == "__main__":
    raise SystemExit(main())
