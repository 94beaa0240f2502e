"""Connecting to a server and managing access: `ame setup`, `ame login`, `ame whoami`, `ame org`, `ame token`.

They speak to the server's REST api (the same routes and scopes as gRPC). Where the endpoint and the token are
found is in `ame.sdk.credentials`.
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import quote, urlsplit

import click

from ame.cli.admin_commands import _request, rest_client

_SCOPES = ("read", "run", "admin", "server-admin")


def _default_grpc_target(rest_url: str) -> str:
    host = urlsplit(rest_url).hostname or "127.0.0.1"
    return f"{host}:50051"


def _check_grpc(target: str, timeout: float, tls: bool) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from ame.sdk.credentials import authenticated_channel

    with authenticated_channel(target, None, tls=tls) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            raise click.ClickException(f"cannot reach the AME gRPC api at {target} ({exc.code().name})") from None
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        raise click.ClickException(f"the AME gRPC api at {target} is not serving")


def _print_token(token: dict[str, Any]) -> None:
    state = "revoked" if token.get("revoked_at") else "active"
    expires = token.get("expires_at") or "never"
    click.echo(
        f"{token['id']}  {token['organisation']}  {token['scope']:<12}  {state:<7}  expires {expires}  "
        f"{token.get('name') or ''}".rstrip()
    )


def register(cli: click.Group) -> None:
    url_option = click.option("--url", default=None, help="REST URL of the AME server (default: the set-up one).")

    @cli.command()
    @click.argument("url")
    @click.option("--grpc", "grpc_target", default=None, help="gRPC HOST:PORT (default: URL's host, port 50051).")
    @click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for each check.")
    def setup(url: str, grpc_target: str | None, timeout: float) -> None:
        """Connect this CLI to the AME server at URL (its REST address, e.g. https://ame.example.com:8080).

        Checks that both the REST and the gRPC api answer, then saves the endpoint in the config directory;
        `ame login` then saves a token for it.
        """
        import httpx

        from ame.sdk.credentials import http_verify, save_endpoint

        url = url.rstrip("/")
        if urlsplit(url).scheme not in ("http", "https"):
            raise click.UsageError("URL must start with http:// or https://")
        target = grpc_target or _default_grpc_target(url)
        tls = urlsplit(url).scheme == "https"  # the gRPC api serves TLS when REST does (one certificate)
        try:
            response = httpx.get(f"{url}/healthz", timeout=timeout, verify=http_verify())
        except httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach the AME REST api at {url} ({exc})") from None
        if response.status_code != 200:
            raise click.ClickException(f"{url}/healthz answered {response.status_code}; is it an AME server?")
        _check_grpc(target, timeout, tls)
        path = save_endpoint(target, url, tls=tls)
        click.echo(f"connected: REST {url}, gRPC {target}{' (TLS)' if tls else ''} (saved in {path})")

    @cli.command()
    @url_option
    def login(url: str | None) -> None:
        """Save a token for the set-up server (asked for, hidden, or read from stdin); mode 0600."""
        import httpx

        from ame.sdk.credentials import bearer, discover_rest_url, http_verify, save_token

        interactive = sys.stdin.isatty()
        token = click.prompt("Token", hide_input=True) if interactive else sys.stdin.readline()
        token = token.strip()
        if not token:
            raise click.UsageError("no token given")
        base = url or discover_rest_url()
        with httpx.Client(base_url=base, timeout=30.0, headers=bearer(token), verify=http_verify()) as client:
            me = _request(client, "GET", "/v1/whoami")
        path = save_token(token)
        click.echo(f"logged in to organisation {me['organisation']} with scope {me['scope']} (saved in {path})")

    @cli.command()
    @url_option
    def whoami(url: str | None) -> None:
        """The organisation and scope of the token this CLI sends."""
        with rest_client(url) as client:
            me = _request(client, "GET", "/v1/whoami")
        click.echo(f"organisation: {me['organisation']}\nscope: {me['scope']}\ntoken: {me['token_id']}")

    @cli.group()
    def org() -> None:
        """Organisations (server-admin)."""

    @org.command("create")
    @click.argument("name")
    @url_option
    def org_create(name: str, url: str | None) -> None:
        """Create organisation NAME (lowercase letters, digits, '_' and '-')."""
        with rest_client(url) as client:
            created = _request(client, "POST", "/v1/organisations", json={"name": name})
        click.echo(f"organisation {created['id']}")

    @org.command("list")
    @url_option
    def org_list(url: str | None) -> None:
        """List every organisation."""
        with rest_client(url) as client:
            orgs = _request(client, "GET", "/v1/organisations")["organisations"]
        for one in orgs:
            click.echo(f"{one['id']}  created {one['created_at']}")

    @cli.group()
    def token() -> None:
        """API tokens of your organisation (admin; a server-admin: of any organisation)."""

    @token.command("create")
    @click.option("--org", "organisation", default=None, help="Organisation (server-admin only; default: yours).")
    @click.option("--scope", type=click.Choice(_SCOPES), default="run", show_default=True)
    @click.option("--expires", default=None, help="Lifetime, e.g. 30d, 12h (default: until revoked).")
    @click.option("--name", default="", help="What the token is for.")
    @url_option
    def token_create(organisation: str | None, scope: str, expires: str | None, name: str, url: str | None) -> None:
        """Create a token. It is printed once, alone on the last line, so a script can capture it."""
        from ame.domain.durations import parse_duration

        body: dict[str, Any] = {"scope": scope, "name": name}
        if organisation:
            body["organisation"] = organisation
        if expires:
            try:
                body["expires_in_seconds"] = max(1, round(parse_duration(expires)))
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--expires") from None
        with rest_client(url) as client:
            created = _request(client, "POST", "/v1/tokens", json=body)
        click.echo(
            f"token {created['id']} for organisation {created['organisation']}, scope {created['scope']}, "
            f"expires {created['expires_at'] or 'never'}; shown once:",
            err=True,
        )
        click.echo(created["token"])

    @token.command("list")
    @click.option("--org", "organisation", default=None, help="Only this organisation's (server-admin).")
    @url_option
    def token_list(organisation: str | None, url: str | None) -> None:
        """List tokens (never their secrets)."""
        params = {"organisation": organisation} if organisation else {}
        with rest_client(url) as client:
            tokens = _request(client, "GET", "/v1/tokens", params=params)["tokens"]
        if not tokens:
            click.echo("no tokens")
        for one in tokens:
            _print_token(one)

    @token.command("revoke")
    @click.argument("token_id")
    @url_option
    def token_revoke(token_id: str, url: str | None) -> None:
        """Revoke token TOKEN_ID: refused from the server's next request on."""
        with rest_client(url) as client:
            revoked = _request(client, "POST", f"/v1/tokens/{quote(token_id, safe='')}/revoke")
        click.echo(f"revoked {revoked['id']}")
