"""`ame org set-limits` and `ame org limits`: an organisation's admission limits, over the server's REST api."""

from __future__ import annotations

import json
from typing import Any

import click

from ame.cli.admin_commands import _request, rest_client
from ame.domain.durations import format_duration, parse_duration

_NONE = "none"


def _count(value: str | None, what: str, minimum: int) -> int | str | None:
    """The option's value: a count, None for "no limit" (`none`), or "" when the option was not given."""
    if value is None:
        return ""
    if value.strip().lower() == _NONE:
        return None
    try:
        number = int(value)
    except ValueError:
        raise click.BadParameter(f"{what} must be a whole number or 'none', not {value!r}") from None
    if number < minimum:
        raise click.BadParameter(f"{what} must be at least {minimum} (or 'none' for no limit)")
    return number


def _timeout(value: str | None) -> float | str | None:
    if value is None:
        return ""
    if value.strip().lower() == _NONE:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds <= 0:
        raise click.BadParameter("the default timeout must be more than 0 (or 'none')")
    return seconds


def describe(view: dict[str, Any]) -> str:
    limits = view["limits"]

    def limit(value: Any) -> str:
        return "no limit" if value is None else str(value)

    timeout = limits["default_timeout_seconds"]
    return "\n".join(
        [
            f"organisation {view['organisation']}",
            f"  max runs:        {limit(limits['max_runs'])} ({view['runs_in_use']} in use)",
            f"  max GPUs:        {limit(limits['max_gpus'])} ({view['gpus_in_use']} in use)",
            f"  default timeout: {'none' if timeout is None else format_duration(timeout)}",
            f"  runs waiting:    {view['runs_waiting']}",
        ]
    )


def register(cli: click.Group) -> None:
    url_option = click.option(
        "--url", default=None, help="REST URL of the AME server (default: $AME_REST_URL or the local server)."
    )
    # Other modules add commands to the same `ame org` group; whichever registers first creates it.
    org = cli.commands.get("org")
    if not isinstance(org, click.Group):

        @cli.group()
        def org() -> None:
            """Organisations and their limits."""

    assert isinstance(org, click.Group)

    @org.command("set-limits")
    @click.argument("organisation")
    @click.option("--max-runs", help="Runs of its own queue at once (1: one at a time); 'none' for no limit.")
    @click.option("--max-gpus", help="GPUs of all its runs together; 'none' for no limit.")
    @click.option("--default-timeout", help="Timeout of a run that sets none, e.g. 1h or 30m; 'none' for no default.")
    @url_option
    def set_limits(
        organisation: str,
        max_runs: str | None,
        max_gpus: str | None,
        default_timeout: str | None,
        url: str | None,
    ) -> None:
        """Set ORGANISATION's limits; a limit not given keeps its value."""
        changes = {
            "max_runs": _count(max_runs, "--max-runs", 1),
            "max_gpus": _count(max_gpus, "--max-gpus", 0),
            "default_timeout_seconds": _timeout(default_timeout),
        }
        with rest_client(url) as client:
            path = f"/v1/orgs/{organisation}/limits"
            current = _request(client, "GET", path)["limits"]
            limits = {key: current[key] if value == "" else value for key, value in changes.items()}
            view = _request(client, "PUT", path, json=limits)
        click.echo(describe(view))

    @org.command("limits")
    @click.argument("organisation")
    @click.option("--json", "as_json", is_flag=True, help="Print the limits as JSON.")
    @url_option
    def show_limits(organisation: str, as_json: bool, url: str | None) -> None:
        """Show ORGANISATION's limits and what it uses now."""
        with rest_client(url) as client:
            view = _request(client, "GET", f"/v1/orgs/{organisation}/limits")
        click.echo(json.dumps(view, indent=2) if as_json else describe(view))
