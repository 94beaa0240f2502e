"""Commands that work on this machine: `task run` (-l runs locally) and `cache` (`artifacts`: artifact_commands,
`secret`: secret_commands).

Heavy imports (the runner, the spec) stay inside the commands so `ame --help` starts fast.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ame.cli.human_sizes import human_size
from ame.cli.project_dir_option import project_dir_option
from ame.cli.task_args_options import args_options, parse_args_options

if TYPE_CHECKING:
    from pydantic import JsonValue

    from ame.data_sets import DataSetDefinition
    from ame.domain.data_sets import DataSetSummary
    from ame.domain.projects import ManifestEntry
    from ame.local_data_sets import LocalDataSets
    from ame.runner.console import TerminalOutput
    from ame.runner.home import AmeHome
    from ame.runner.results import RunResult
    from ame.runner.task_runs import LocalRunner
    from ame.spec import ExternalTemplates, Project, ResolvedTask

__all__ = ["register"]


def register(cli: click.Group) -> None:
    task_group = cli.commands.get("task")
    if not isinstance(task_group, click.Group):
        raise RuntimeError("the `task` group must exist before local commands are registered")
    task_group.add_command(run_command)
    # Seed 003's `ame run`: the same command as `ame task run`.
    cli.add_command(run_command, "run")
    cli.add_command(cache_group)


# --- ame task run -------------------------------------------------------------------------------


@click.command("run")
@click.argument("name", required=False)
@click.option("-l", "--local", is_flag=True, help="Run on this machine instead of the AME server.")
@project_dir_option
@click.option(
    "--max-parallel",
    type=click.IntRange(min=1),
    default=None,
    help="Pipeline steps run at once in a parallel group (local runs; default: CPU count).",
)
@click.option("--follow/--no-follow", default=True, show_default=True, help="Remote runs: stream output.")
@click.option("--detach", is_flag=True, help="Remote runs: start the run, print its id and return (as --no-follow).")
@click.option(
    "--download/--no-download",
    default=True,
    show_default=True,
    help="Remote runs: bring the run's artifacts into the project directory when it ends.",
)
@click.option(
    "--with-project",
    "with_projects",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Local runs: directory of another AME project whose templates this project uses (fromTemplate with a "
    "project), as `ame validate --with-project`. Repeatable. On the server, the server resolves them.",
)
@args_options
@click.pass_context
def run_command(
    ctx: click.Context,
    name: str | None,
    local: bool,
    project_dir: Path,
    max_parallel: int | None,
    follow: bool,
    detach: bool,
    download: bool,
    args_json: str | None,
    args_file: Path | None,
    with_projects: tuple[Path, ...] = (),
) -> None:
    """Run task NAME of the project here (-l) or on the AME server; without NAME, pick one.

    The exit code is the task's. With -l, Ctrl-C stops the task (SIGTERM to all its processes, SIGKILL
    after a grace period); a second Ctrl-C kills it at once. On the server, Ctrl-C detaches: the run goes
    on and `ame task logs` follows it again; a second Ctrl-C within 3 s cancels it. When a run on the server
    ends, its artifacts are downloaded into the project directory (--no-download skips this); a file edited here
    since the push is not overwritten: the artifact is saved beside it as NAME.ame-<run id>.
    """
    if local and detach:
        raise click.UsageError("--detach is for runs on the server; a local run (-l) ends with this command")
    args = parse_args_options(args_json, args_file)
    if with_projects and not local:
        raise click.UsageError("--with-project is for local runs (-l); the server resolves other projects' templates")
    external = _external_templates(with_projects)
    project = _load_project(project_dir, external)
    name = name or _pick_task(project)
    if not local:
        ctx.exit(_run_remote(project_dir, name, follow and not detach, download, args))
    ctx.exit(_run_local(project, project_dir, name, max_parallel, args, external))


def _external_templates(directories: tuple[Path, ...]) -> ExternalTemplates | None:
    from ame.spec import templates_from

    return templates_from(directories) if directories else None


def _load_project(project_dir: Path, external: ExternalTemplates | None = None) -> Project:
    from ame.spec import SpecError, load_project

    try:
        return load_project(project_dir, external_templates=external)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from exc


def _pick_task(project: Project) -> str:
    names = list(project.tasks)
    if not names:
        raise click.ClickException("the project has no tasks")
    if not _stdin_is_terminal():
        listing = "\n  ".join(names)
        raise click.UsageError(f"name the task to run (stdin is not a terminal to pick one); tasks:\n  {listing}")
    for number, name in enumerate(names, start=1):
        click.echo(f"  {number:>2}. {name}", err=True)
    choice: int = click.prompt("Task to run", type=click.IntRange(1, len(names)), err=True)
    return names[choice - 1]


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _run_remote(project_dir: Path, name: str, follow: bool, download: bool, args: JsonValue) -> int:
    try:
        remote = importlib.import_module("ame.cli.remote_commands")
    except ModuleNotFoundError as exc:
        if exc.name != "ame.cli.remote_commands":
            raise
        raise click.ClickException(
            "remote runs are not available in this installation; use -l to run the task locally"
        ) from exc
    code: int = remote.run_remote(project_dir, name, follow, download, args)
    return code


def _run_local(
    project: Project,
    project_dir: Path,
    name: str,
    max_parallel: int | None,
    args: JsonValue,
    external: ExternalTemplates | None = None,
) -> int:
    from ame.runner.console import TerminalOutput
    from ame.runner.gpus import GpuPool, HostResourceSettings
    from ame.runner.home import AmeHome
    from ame.runner.secret_sources import LocalSecretStore, vault_source_from_env
    from ame.runner.task_runs import LocalRunner, RunSettings
    from ame.spec import SpecError, resolve_task
    from ame.storage import LocalObjectStore

    try:
        task = resolve_task(project, name, external_templates=external)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from exc
    home = AmeHome.from_env()
    try:
        host = HostResourceSettings()
        gpus = GpuPool.for_host(home.gpu_locks, host.gpus, memory=host.gpu_memory, model=host.gpu_model)
    except ValueError as exc:
        raise click.ClickException(
            f"AME_GPUS / AME_GPU_MEMORY / AME_GPU_MODEL / AME_MEMORY_ENFORCEMENT: {exc}"
        ) from exc
    source = Path(project.source_file) if project.source_file else None
    root = source.parent.resolve() if source is not None and source.is_file() else project_dir.resolve()
    settings = RunSettings(
        home=home,
        project_dir=root,
        project_name=project.name or root.name,
        base_env=dict(os.environ),
        secrets=LocalSecretStore(home.secrets_file),
        vault=vault_source_from_env,
        artifacts=LocalObjectStore(home.artifacts),
        max_parallel=max_parallel or os.cpu_count() or 1,
        gpus=gpus,
        memory_enforcement=host.memory_enforcement,
    )
    output = TerminalOutput(sys.stdout, sys.stderr, step_names=_step_labels(task))
    data_sets = _DataSetNeeds(project, settings.project_name, root, home, external) if _reads_data_sets(task) else None
    return asyncio.run(_run_with_signals(LocalRunner(settings), task, output, args, data_sets))


def _step_labels(task: ResolvedTask, prefix: str = "") -> list[str]:
    labels: list[str] = []
    for stage in task.pipeline:
        for step in stage:
            label = prefix + step.name
            labels.extend(_step_labels(step, label + "/") if step.pipeline else [label])
    return labels


def _reads_data_sets(task: ResolvedTask) -> bool:
    return any(step.data_sets for step in task.steps())


class _DataSetNeeds:
    """What a local run needs to place the data sets its task reads (see `ame.local_data_sets`)."""

    def __init__(
        self, project: Project, project_name: str, root: Path, home: AmeHome, external: ExternalTemplates | None
    ) -> None:
        self.project = project
        # Other projects' templates (`--with-project`), which a producing task may be built on.
        self.external = external
        self.project_name = project_name
        self.root = root
        self.home = home

    async def prepare(
        self, runner: LocalRunner, task: ResolvedTask, output: TerminalOutput, cancel: asyncio.Event
    ) -> None:
        from ame.data_sets import definitions_of
        from ame.domain.ids import new_run_id
        from ame.local_data_sets import DataSetError, LocalDataSets
        from ame.sdk.credentials import configured_target

        local = LocalDataSets(self.home)
        definitions = {d.name: d for d in definitions_of(self.project, external_templates=self.external)}
        wanted: dict[tuple[str, str], None] = {}
        for step in task.steps():
            for ref in step.data_sets:
                wanted[(ref.project or self.project_name, ref.name)] = None

        async def produce(definition: DataSetDefinition) -> tuple[str, bool, str]:
            run_id = new_run_id()
            await output.notice(
                f"run {run_id}: task {definition.producer.name} (local, produces data set {definition.name})"
            )
            result = await runner.run(definition.producer, output, run_id=run_id, cancel=cancel)
            return run_id, result.state == "succeeded", result.reason or f"it ended {result.state}"

        target = configured_target()
        for project, name in wanted:
            definition = definitions.get(name) if project == self.project_name else None
            if target is not None:
                summary = await self._from_server(target, local, project, name, definition, output)
                if summary is not None:
                    continue
            if project != self.project_name:
                raise DataSetError(
                    f"data set {name!r} belongs to project {project!r}: a local run (-l) produces only its own "
                    "project's data sets; configure a server (`ame setup`) to read it from there"
                )
            if definition is None:
                raise DataSetError(f"data set {name!r} has no task to produce it in this project's ame.yml")
            summary = await local.prepare(project, definition, self.root, produce, output.notice)
            await output.notice(
                f"data set {name!r}: version {summary.version_id[:12]} at {summary.path}/ "
                f"({summary.file_count} file(s))"
            )

    async def _from_server(
        self,
        target: str,
        local: LocalDataSets,
        project: str,
        name: str,
        definition: DataSetDefinition | None,
        output: TerminalOutput,
    ) -> DataSetSummary | None:
        """The data set as the server has it (produced there first if need be), placed here; None when the server
        does not know this definition (it is then produced here)."""
        from ame.domain import LogEnd
        from ame.local_data_sets import DataSetError
        from ame.sdk import AmeError, Client, NotFound

        digest = definition.definition_hash if definition is not None else ""
        loop = asyncio.get_running_loop()

        def notice(text: str) -> None:
            asyncio.run_coroutine_threadsafe(output.notice(text), loop).result()

        def ready() -> tuple[DataSetSummary, list[ManifestEntry]] | None:
            with Client(target) as client:
                try:
                    summary, files = client.get_data_set(project, name, definition_hash=digest, produce=True)
                except NotFound:
                    return None
                if summary.status == "pending" or summary.status == "running":
                    notice(f"waiting for data set {name!r} (run {summary.run_id or '-'} on the server produces it)")
                    if summary.run_id:
                        # Event-driven: the run's log ends when it does.
                        for item in client.follow_logs(summary.run_id):
                            if isinstance(item, LogEnd):
                                break
                    # The registry records the version just after the run's end: a short wait, with a deadline.
                    deadline = time.monotonic() + 60
                    while summary.status in ("pending", "running") and time.monotonic() < deadline:
                        time.sleep(0.2)
                        summary, files = client.get_data_set(project, name, definition_hash=digest)
                if summary.status == "failed":
                    raise DataSetError(f"data set {name!r} failed: {summary.reason}")
                if summary.status != "ready":
                    raise DataSetError(f"data set {name!r} is still {summary.status} on the server")
                return summary, files

        try:
            found = await asyncio.to_thread(ready)
        except AmeError as exc:
            raise DataSetError(f"data set {name!r}: the server at {target} answered: {exc}") from exc
        if found is None:
            if definition is not None:
                await output.notice(
                    f"the server has no data set {name!r} with this definition (push the project to produce it "
                    "there); producing it here"
                )
            return None
        summary, files = found
        fetched = 0

        async def fetch(sha256: str, temp: Path) -> None:
            nonlocal fetched

            def download() -> None:
                with Client(target) as client, temp.open("wb") as out:
                    for chunk in client.download_data_set_blob(project, name, summary.version_id, sha256):
                        out.write(chunk)

            await asyncio.to_thread(download)
            fetched += 1

        await local.fetched(summary, files, self.root, fetch, output.notice)
        await output.notice(
            f"data set {name!r}: version {summary.version_id[:12]} from the server at {summary.path}/ "
            f"({summary.file_count} file(s), {fetched} fetched)"
        )
        return summary


async def _run_with_signals(
    runner: LocalRunner,
    task: ResolvedTask,
    output: TerminalOutput,
    args: JsonValue = None,
    data_sets: _DataSetNeeds | None = None,
) -> int:
    from ame.domain.ids import new_run_id
    from ame.local_data_sets import DataSetError
    from ame.runner.local_resources import UnrunnableError
    from ame.runner.secret_sources import SecretError

    loop = asyncio.get_running_loop()
    cancel = asyncio.Event()
    current = asyncio.current_task()
    presses = 0

    def on_signal() -> None:
        # The task runs in its own session, so the terminal's Ctrl-C reaches only us: forward it
        # as a graceful stop first, and kill outright on the second press.
        nonlocal presses
        presses += 1
        if presses == 1:
            sys.stderr.write("\name: stopping the task (Ctrl-C again to kill it)\n")
            cancel.set()
        elif current is not None:
            current.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    run_id = new_run_id()
    try:
        if data_sets is not None:
            await data_sets.prepare(runner, task, output, cancel)
        await output.notice(f"run {run_id}: task {task.name} (local)")
        result = await runner.run(task, output, run_id=run_id, cancel=cancel, args=args)
    except DataSetError as exc:
        raise click.ClickException(str(exc)) from exc
    except (SecretError, UnrunnableError) as exc:
        raise click.ClickException(str(exc)) from exc
    except asyncio.CancelledError:
        sys.stderr.write("ame: killed\n")
        return 137
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    _report(result, task)
    return result.exit_code


def _report(result: RunResult, task: ResolvedTask) -> None:
    from ame.runner.console import format_summary

    if task.pipeline:
        click.echo(format_summary(result), err=True)
    elif result.state != "succeeded":
        detail = f" ({result.reason})" if result.reason and result.reason != result.state else ""
        click.echo(f"ame: run {result.run_id} {result.state}{detail}", err=True)
    if result.artifacts:
        click.echo(f"ame: artifacts: ame artifacts list {result.run_id}", err=True)


# --- ame cache ----------------------------------------------------------------------------------


@click.group("cache")
def cache_group() -> None:
    """Environments and tools AME built for local runs."""


@cache_group.command("list")
def cache_list() -> None:
    """List cached environments and tools with their size and when they were last used."""
    from ame.runner.env_cache import EnvironmentCache
    from ame.runner.home import AmeHome

    home = AmeHome.from_env()
    rows = [("KEY", "KIND", "PYTHON", "SIZE", "LAST USED")]
    for root in (home.environments, home.tools):
        for entry in EnvironmentCache(root).entries():
            kind = entry.description.get("kind", "?")
            python = entry.description.get("python") or entry.description.get("version", "-")
            rows.append((entry.key, kind, python, human_size(entry.size_bytes), _ago(entry.last_used_at)))
    if len(rows) == 1:
        click.echo(f"no cached environments under {home.root}")
        return
    _echo_table(rows)


@cache_group.command("prune")
@click.option("--days", type=click.FloatRange(min=0), default=30.0, show_default=True, help="Unused for this long.")
@click.option("--all", "prune_all", is_flag=True, help="Remove every entry not in use right now.")
def cache_prune(days: float, prune_all: bool) -> None:
    """Remove environments and tools unused for --days (or all with --all); entries in use are kept."""
    from ame.runner.env_cache import EnvironmentCache
    from ame.runner.home import AmeHome

    home = AmeHome.from_env()
    unused_for = None if prune_all else days * 86400
    removed = 0
    freed = 0
    for root in (home.environments, home.tools):
        for entry in EnvironmentCache(root).prune(unused_for_seconds=unused_for):
            click.echo(f"removed {entry.key} ({human_size(entry.size_bytes)})")
            removed += 1
            freed += entry.size_bytes
    click.echo(f"{removed} removed, {human_size(freed)} freed")


# --- ame artifacts -l (the group, with the server side, is in artifact_commands) ---------------------


def local_artifacts_list(run_id: str) -> None:
    """List the artifacts of local run RUN_ID (an id, a unique prefix of one, or project/task/run)."""
    from ame.runner.home import AmeHome
    from ame.storage import LocalObjectStore

    home = AmeHome.from_env()
    prefix = _run_prefix(home, run_id)
    objects = asyncio.run(LocalObjectStore(home.artifacts).list(prefix))
    if not objects:
        click.echo(f"no artifacts under {prefix}")
        return
    rows = [("PATH", "SIZE")]
    rows.extend((info.key[len(prefix) :], human_size(info.size)) for info in objects)
    _echo_table(rows)


def local_artifacts_get(run_id: str, paths: Sequence[str], dest: Path) -> None:
    """Copy the artifacts of local run RUN_ID (or only PATHs, files or directories) into `dest`."""
    from ame.runner.home import AmeHome
    from ame.storage import LocalObjectStore

    home = AmeHome.from_env()
    prefix = _run_prefix(home, run_id)
    store = LocalObjectStore(home.artifacts)
    wanted = [path.strip("/") for path in paths if path.strip("/")]

    async def download() -> int:
        count = 0
        for info in await store.list(prefix):
            relative = info.key[len(prefix) :]
            if wanted and not any(relative == w or relative.startswith(w + "/") for w in wanted):
                continue
            await store.get_file(info.key, dest / relative)
            click.echo(str(dest / relative))
            count += 1
        return count

    if asyncio.run(download()) == 0:
        raise click.ClickException(f"no artifacts matching {' '.join(wanted) or '*'} under {prefix}")


def _run_prefix(home: AmeHome, run_id: str) -> str:
    from ame.runner.run_records import RunRecordNotFoundError, find_run_record

    if run_id.count("/") >= 2:
        from ame.storage import InvalidKeyError, validate_prefix

        try:
            return validate_prefix(run_id.rstrip("/") + "/")
        except InvalidKeyError as exc:
            raise click.ClickException(f"{run_id!r} is not a run id or project/task/run: {exc}") from None
    try:
        return find_run_record(home.runs, run_id).artifact_prefix
    except RunRecordNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc


# --- formatting ---------------------------------------------------------------------------------


def _echo_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _ago(timestamp: float) -> str:
    seconds = max(0.0, time.time() - timestamp)
    if seconds < 3600:
        return f"{int(seconds // 60)}m ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h ago"
    return f"{int(seconds // 86400)}d ago"
