"""`ame-api` / `python -m ame_api`: serve | migrate | check-config | create-admin-token | rotate-secrets-key."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from ame.domain.principals import Scope
from ame_api.app import MIGRATIONS, SERVICE, build_components
from ame_api.settings import ApiSettings
from ame_platform.service_main import ServiceDefinition
from ame_platform.service_main import main as service_main

DEFINITION = ServiceDefinition(
    name=SERVICE, settings_factory=ApiSettings, migrations_package=MIGRATIONS, build=build_components
)


async def _create_admin_token(organisation: str, scope: Scope, name: str) -> str:
    import asyncpg

    from ame_api import bootstrap

    settings = ApiSettings()
    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    try:
        _, token = await bootstrap.create_token(
            conn, organisation=organisation, scope=scope, name=name, created_by="ame-api create-admin-token"
        )
    finally:
        await conn.close()
    return token


def create_admin_token(argv: Sequence[str]) -> int:
    """Print a new token (server-admin by default), alone on stdout: a standalone deployment's first token."""
    parser = argparse.ArgumentParser(prog="ame-api create-admin-token", description=create_admin_token.__doc__)
    parser.add_argument("--org", default="default", help="Organisation of the token (default: default).")
    parser.add_argument("--scope", default=Scope.SERVER_ADMIN.value, choices=[s.value for s in Scope])
    parser.add_argument("--name", default="created by ame-api create-admin-token")
    args = parser.parse_args(argv)
    try:
        print(asyncio.run(_create_admin_token(args.org, Scope(args.scope), args.name)))
    except LookupError as exc:
        print(f"ame-api: {exc}", file=sys.stderr)
        return 2
    return 0


def main() -> int:
    if sys.argv[1:2] == ["rotate-secrets-key"]:
        from ame_api.secrets.rotation import main as rotate_main

        return rotate_main(sys.argv[2:])
    if sys.argv[1:2] == ["create-admin-token"]:
        return create_admin_token(sys.argv[2:])
    return service_main(DEFINITION)


if __name__ == "__main__":
    raise SystemExit(main())
