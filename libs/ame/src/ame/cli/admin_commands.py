"""`ame admin`: operator commands against an AME server's REST api (dead letters: list, replay)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import httpx


def rest_client(url: str | None) -> httpx.Client:
    """An HTTP client of the server's REST api (`url`, else the discovered one) sending the discovered token."""
    import httpx

    from ame.sdk.credentials import bearer, discover_rest_url, discover_token, http_verify

    return httpx.Client(
        base_url=url or discover_rest_url(), timeout=30.0, headers=bearer(discover_token()), verify=http_verify()
    )


def _request(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    import httpx

    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the AME server at {client.base_url} ({exc})") from None
    if response.status_code >= 400:
        try:
            message = response.json().get("error") or response.text
        except ValueError:
            message = response.text
        raise click.ClickException(f"{response.status_code}: {message}")
    return response.json()


def _all_letters(client: httpx.Client) -> list[dict[str, Any]]:
    letters: list[dict[str, Any]] = []
    after = 0
    while True:
        page = _request(client, "GET", "/v1/admin/deadletters", params={"after": after, "limit": 1000})
        letters.extend(page["deadletters"])
        after = page["next_after"]
        if not after:
            return letters


def register(cli: click.Group) -> None:
    url_option = click.option(
        "--url", default=None, help="REST URL of the AME server (default: $AME_REST_URL or the local server)."
    )

    @cli.group()
    def admin() -> None:
        """Operate an AME server."""

    @admin.group()
    def deadletters() -> None:
        """Messages a service gave up on, with the reason; replay them once the cause is fixed."""

    @deadletters.command("list")
    @click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
    @url_option
    def list_cmd(as_json: bool, url: str | None) -> None:
        """List dead letters, oldest first."""
        with rest_client(url) as client:
            letters = _all_letters(client)
        if as_json:
            click.echo(json.dumps(letters, indent=2))
            return
        if not letters:
            click.echo("no dead letters")
            return
        for letter in letters:
            click.echo(
                f"{letter['id']}  {letter['consumer']}  {letter['subject']}  "
                f"deliveries={letter['deliveries']}  {letter['at'] or ''}\n    {letter['reason']}"
            )

    @deadletters.command("replay")
    @click.argument("letter_id", required=False, type=click.IntRange(min=1))
    @click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter.")
    @url_option
    def replay(letter_id: int | None, replay_all: bool, url: str | None) -> None:
        """Publish a dead letter (ID, or --all) to its original subject again and remove it."""
        if (letter_id is None) == (not replay_all):
            raise click.UsageError("give one dead letter ID or --all")
        with rest_client(url) as client:
            ids = [letter_id] if letter_id is not None else [x["id"] for x in _all_letters(client)]
            for one in ids:
                letter = _request(client, "POST", f"/v1/admin/deadletters/{one}/replay")
                click.echo(f"replayed {letter['id']} to {letter['subject']}")
        if not ids:
            click.echo("no dead letters")
