"""`ame setup`, `ame login`, `ame whoami`, `ame org` and `ame token` against a running api, as users type them."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ame.cli.main import cli
from tests.infra_fixtures import TEST_TOKEN
from tests.stack_fixtures import Stack

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


async def _ame(env: dict[str, str | None], *args: str, stdin: str | None = None) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env, input=stdin, catch_exceptions=False)


async def test_org_and_token_commands(stack: Stack, tmp_path: Path) -> None:
    env: dict[str, str | None] = {"AME_REST_URL": stack.rest_url, "AME_CONFIG_DIR": str(tmp_path / "config")}
    me = await _ame(env, "whoami")
    assert me.exit_code == 0 and "organisation: default" in me.stdout and "scope: server-admin" in me.stdout

    assert (await _ame(env, "org", "create", "team1")).exit_code == 0
    listed = await _ame(env, "org", "list")
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["default", "team1"]

    created = await _ame(
        env, "token", "create", "--org", "team1", "--scope", "admin", "--expires", "30d", "--name", "ci"
    )
    assert created.exit_code == 0, created.output
    token = created.stdout.splitlines()[-1]
    assert token.startswith("ame_") and len(token) > 40

    as_team = {**env, "AME_TOKEN": token}
    me = await _ame(as_team, "whoami")
    assert "organisation: team1" in me.stdout and "scope: admin" in me.stdout, me.output
    # An organisation's admin sees its own tokens only, and cannot manage organisations.
    tokens = await _ame(as_team, "token", "list")
    assert len(tokens.stdout.splitlines()) == 1 and " team1 " in tokens.stdout and "active" in tokens.stdout
    refused = await _ame(as_team, "org", "list")
    assert refused.exit_code != 0 and "403" in refused.output

    token_id = tokens.stdout.split()[0]
    assert (await _ame(env, "token", "revoke", token_id)).exit_code == 0
    after = await _ame(as_team, "whoami")
    assert after.exit_code != 0 and "401" in after.output and token not in after.output


async def test_setup_and_login_save_the_endpoint_and_a_private_token(stack: Stack, tmp_path: Path) -> None:
    config = tmp_path / "config"
    # Nothing from the environment: what setup and login save is all the CLI has.
    env: dict[str, str | None] = {
        "AME_CONFIG_DIR": str(config),
        "AME_HOME": str(tmp_path / "home"),
        "AME_TOKEN": None,
        "AME_REST_URL": None,
        "AME_GRPC_TARGET": None,
    }
    before = await _ame(env, "whoami")
    assert before.exit_code != 0  # no server at the default address, or no token for it

    host, port = stack.grpc_target.rsplit(":", 1)
    setup = await _ame(env, "setup", stack.rest_url, "--grpc", f"{host}:{port}")
    assert setup.exit_code == 0, setup.output
    assert "connected" in setup.stdout and (config / "config.json").exists()
    assert "401" in (await _ame(env, "whoami")).output

    wrong = await _ame(env, "login", stdin="ame_wrong-token-of-no-server-at-all\n")
    assert wrong.exit_code != 0 and "401" in wrong.output and not (config / "token").exists()

    login = await _ame(env, "login", stdin=f"{TEST_TOKEN}\n")
    assert login.exit_code == 0, login.output
    saved = config / "token"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    me = await _ame(env, "whoami")
    assert me.exit_code == 0 and "scope: server-admin" in me.stdout
    # The gRPC commands use the saved endpoint and token too.
    runs = await _ame(env, "runs", "list")
    assert runs.exit_code == 0, runs.output
