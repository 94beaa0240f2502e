"""`ame artifacts list|get`: a run's artifacts from the AME server, or with -l from the local runs' store."""

from __future__ import annotations

from pathlib import Path

import click

from ame.cli.server_option import server_option

__all__ = ["register"]

_LOCAL = click.option("-l", "--local", is_flag=True, help="A local run's artifacts (`ame task run -l`).")
_SERVER = server_option


def register(cli: click.Group) -> None:
    cli.add_command(artifacts_group)


@click.group("artifacts")
def artifacts_group() -> None:
    """Artifacts of runs: on the AME server by default, -l for local runs."""


@artifacts_group.command("list")
@click.argument("run_id")
@_LOCAL
@_SERVER
def artifacts_list(run_id: str, local: bool, target: str | None) -> None:
    """List the artifacts of run RUN_ID (every attempt's on the server; -l: an id, a unique prefix of one, or
    project/task/run)."""
    if local:
        from ame.cli.local_commands import local_artifacts_list

        local_artifacts_list(run_id)
        return
    from ame.sdk import AmeError, Client

    try:
        with Client(target) as client:
            found = client.list_run_artifacts(run_id)
    except AmeError as exc:
        raise click.ClickException(_explained(exc)) from None
    if not found:
        click.echo(f"run {run_id} has no artifacts")
        return
    rows = [("PATH", "SIZE", "ATTEMPT", "SHA256")]
    rows.extend((a.path, str(a.size), str(a.attempt), a.sha256[:12]) for a in found)
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@artifacts_group.command("get")
@click.argument("run_id")
@click.argument("paths", nargs=-1)
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory to download into; paths inside the run are kept.",
)
@_LOCAL
@_SERVER
def artifacts_get(run_id: str, paths: tuple[str, ...], dest: Path, local: bool, target: str | None) -> None:
    """Download the artifacts of RUN_ID (or only PATHs, files or directories) into --dest.

    On the server, each path's latest attempt is downloaded; a file already in --dest is replaced.
    """
    if local:
        from ame.cli.local_commands import local_artifacts_get

        local_artifacts_get(run_id, paths, dest)
        return
    from ame.cli.artifact_downloads import DownloadError, download, select
    from ame.sdk import AmeError, Client

    try:
        with Client(target) as client:
            chosen = select(client.list_run_artifacts(run_id), paths)
            if not chosen:
                raise click.ClickException(f"run {run_id} has no artifacts matching {' '.join(paths) or '*'}")
            report = download(
                chosen,
                lambda artifact: client.download_artifact(run_id, artifact.path, attempt=artifact.attempt),
                dest,
                run_id=run_id,
            )
    except (AmeError, DownloadError, OSError) as exc:
        raise click.ClickException(_explained(exc)) from None
    for path in [*report.written, *report.unchanged]:
        click.echo(str(dest / path))
    for existing, beside in report.kept_local:
        click.echo(f"{dest / beside} ({existing} is a directory here)", err=True)


def _explained(exc: Exception) -> str:
    from ame.sdk import NotFound

    if isinstance(exc, NotFound):
        return f"{exc} on the server (for a local run's artifacts, add -l)"
    return str(exc)
