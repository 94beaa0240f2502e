"""`ame-scheduler` / `python -m ame_scheduler`: serve | migrate | check-config."""

from __future__ import annotations

from ame_platform.service_main import ServiceDefinition
from ame_platform.service_main import main as service_main
from ame_scheduler.app import MIGRATIONS, SERVICE, build_components
from ame_scheduler.settings import SchedulerSettings

DEFINITION = ServiceDefinition(
    name=SERVICE, settings_factory=SchedulerSettings, migrations_package=MIGRATIONS, build=build_components
)


def main() -> int:
    return service_main(DEFINITION)


if __name__ == "__main__":
    raise SystemExit(main())
