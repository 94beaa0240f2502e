"""`ame-api` / `python -m ame_api`: serve | migrate | check-config | rotate-secrets-key."""

from __future__ import annotations

import sys

from ame_api.app import MIGRATIONS, SERVICE, build_components
from ame_api.settings import ApiSettings
from ame_platform.service_main import ServiceDefinition
from ame_platform.service_main import main as service_main

DEFINITION = ServiceDefinition(
    name=SERVICE, settings_factory=ApiSettings, migrations_package=MIGRATIONS, build=build_components
)


def main() -> int:
    if sys.argv[1:2] == ["rotate-secrets-key"]:
        from ame_api.secrets.rotation import main as rotate_main

        return rotate_main(sys.argv[2:])
    return service_main(DEFINITION)


if __name__ == "__main__":
    raise SystemExit(main())
