"""Commands that talk to an AME server: submit runs, follow their output, read and cancel them."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ame.cli.server_option import server_option
from ame.cli.task_args_options import args_options, parse_args_options

if TYPE_CHECKING:
    from collections.abc import Callable

    from pydantic import JsonValue

    from ame.domain import LogLine, Run, RunSpec
    from ame.domain.projects import ProjectVersion
    from ame.sdk import Client
    from ame.spec import Project, ResolvedTask

# Exit codes of runs that did not end on their own, as shells and `timeout(1)` report them.
_STATE_EXIT = {"cancelled": 130, "timed_out": 124, "lost": 1}
# After Ctrl-C detaches from a run, how long a second Ctrl-C still cancels it.
CANCEL_WINDOW_SECONDS = 3.0


def _client(target: str | None) -> Client:
    from ame.sdk import Client

    return Client(target)


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


def follow(client: Client, run_id: str, *, from_seq: int = 0, quiet_end: bool = False) -> int:
    """Print a run's output (stdout to stdout, stderr and AME's own lines to stderr) and return its exit code."""
    from ame.domain import LogEnd

    for batch in client.follow_log_batches(run_id, from_seq):
        if isinstance(batch, LogEnd):
            code = _STATE_EXIT.get(batch.state.value, batch.exit_code if batch.exit_code is not None else 1)
            if not quiet_end and (batch.state.value != "succeeded" or batch.reason):
                detail = f" ({batch.reason})" if batch.reason else ""
                click.echo(f"ame: run {run_id} {batch.state.value}{detail}", err=True)
            return code
        _print_lines(batch)
    return 1


def _print_lines(lines: list[LogLine]) -> None:
    """Write a batch of lines with one write and one flush per run of lines bound for the same stream (a chatty run
    sends thousands at once), keeping their order across stdout and stderr."""
    pending: list[str] = []
    target = sys.stdout
    for line in lines:
        out = sys.stdout if line.stream == "stdout" else sys.stderr
        if out is not target and pending:
            target.write("".join(pending))
            target.flush()
            pending = []
        target = out
        prefix = "ame: " if line.stream == "system" and not line.text.startswith("ame:") else ""
        pending.append(prefix + line.text + "\n")
    if pending:
        target.write("".join(pending))
        target.flush()


def _print_run(run: Run, as_json: bool, *, detail: bool = False) -> None:
    if as_json:
        click.echo(run.model_dump_json(indent=2))
        return
    code = "" if run.exit_code is None else f" exit={run.exit_code}"
    reason = f" ({run.reason})" if run.reason else ""
    click.echo(f"{run.id}  {run.spec.project}/{run.spec.task}  {run.state.value}{code}{reason}")
    if detail:
        click.echo(f"  started by: {run.started_by or 'unknown'}  (organisation {run.organisation})")
    if detail and (len(run.attempts) > 1 or run.spec.retries):
        click.echo(f"  {'ATTEMPT':>7}  {'STATE':10}  {'EXIT':>4}  {'STARTED':20}  {'FINISHED':20}  REASON")
        for a in run.attempts:
            exit_code = "" if a.exit_code is None else str(a.exit_code)
            click.echo(
                f"  {a.attempt:>7}  {a.state.value:10}  {exit_code:>4}  {_when(a.started_at):20}  "
                f"{_when(a.finished_at):20}  {a.reason}".rstrip()
            )


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if at is not None else "-"


def _age(at: datetime) -> str:
    seconds = int((datetime.now(UTC) - at).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _data_set_wait(run: Run) -> str:
    """`(waiting for data set 'x')` when the run waits for a data set to be produced, else nothing."""
    return f" ({run.reason})" if run.reason.startswith("waiting for data set") else ""


def submit_and_follow(spec: RunSpec, *, target: str | None, follow_output: bool) -> int:
    from ame.sdk import AmeError

    try:
        with _client(target) as client:
            run = client.submit_run(spec)
            click.echo(f"ame: run {run.id} queued{_data_set_wait(run)}", err=True)
            if not follow_output:
                click.echo(run.id)
                return 0
            return _follow_or_detach(client, run.id)
    except AmeError as exc:
        raise _fail(exc) from None


def _follow_or_detach(
    client: Client,
    run_id: str,
    on_end: Callable[[], None] | None = None,
    follow_run: Callable[[Client, str], int] | None = None,
) -> int:
    """Follow the run; Ctrl-C detaches (the run goes on, exit 0) and a second Ctrl-C soon after cancels it.

    `on_end` is called once the run has ended while followed (not after a detach).
    """
    try:
        code = (follow_run or follow)(client, run_id)
    except KeyboardInterrupt:
        pass
    else:
        if on_end is not None:
            on_end()
        return code
    click.echo(
        f"\name: detached from run {run_id}; it goes on (`ame task logs {run_id}` follows it again). "
        f"Ctrl-C again within {CANCEL_WINDOW_SECONDS:.0f} s cancels it.",
        err=True,
    )
    try:
        # Not synchronisation: the time a person gets to press Ctrl-C a second time.
        time.sleep(CANCEL_WINDOW_SECONDS)
    except KeyboardInterrupt:
        run = client.cancel_run(run_id, reason="cancelled with Ctrl-C")
        click.echo(f"ame: run {run_id} {run.state.value}", err=True)
        return _STATE_EXIT["cancelled"]
    return 0


def run_remote(project_dir: Path, task_name: str, follow: bool, download: bool = True, args: JsonValue = None) -> int:
    """`ame task run NAME` without -l: push the project, run the task on the server from that version, and (unless
    `download` is off) bring the run's artifacts back into the project directory when it ends."""
    from ame.run_specs import run_spec_for_task
    from ame.spec import SpecError, external_template_refs, load_project, resolve_task

    try:
        project = load_project(project_dir)
        # Templates of other projects are resolved by the server at push time; the task is resolved after it.
        task = None if external_template_refs(project) else resolve_task(project, task_name)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    name = project.name or project_dir.resolve().name
    pushed_at = time.time()
    version = None
    if task is None:
        version = _push_version(project_dir, name)
        task = _resolve_pinned(project, task_name, version.template_pins)
    if task.executor is None:
        return _run_remote_pipeline(project_dir, task, name, follow, args, version, download, pushed_at)
    if version is None:
        version = _push_version(project_dir, name)
    version_id = version.id
    spec = run_spec_for_task(task, project=name, project_version_id=version_id).model_copy(update={"args": args})
    if not download or not follow:
        return submit_and_follow(spec, target=None, follow_output=follow)
    from ame.sdk import AmeError

    try:
        with _client(None) as client:
            run = client.submit_run(spec)
            click.echo(f"ame: run {run.id} queued{_data_set_wait(run)}", err=True)

            def bring_back() -> None:
                _bring_back(client, run.id, project_dir, name, version_id, pushed_at)

            return _follow_or_detach(client, run.id, on_end=bring_back)
    except AmeError as exc:
        raise _fail(exc) from None


def _run_remote_pipeline(
    project_dir: Path,
    task: ResolvedTask,
    name: str,
    follow: bool,
    args: JsonValue,
    version: ProjectVersion | None,
    download: bool,
    pushed_at: float,
) -> int:
    """A pipeline runs on the server as a parent run whose steps are child runs; followed as `-l` shows it, and
    (unless `download` is off) what its steps wrote is brought back when it ends. `version` is the version
    already pushed (to resolve templates of other projects), else None."""
    from ame.cli.pipeline_follow import follow_pipeline
    from ame.run_specs import pipeline_labels, run_spec_for_pipeline, with_args
    from ame.sdk import AmeError

    try:
        run_spec_for_pipeline(task, project=name)  # refuse what cannot run remotely before pushing
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    version_id = (version or _push_version(project_dir, name)).id
    spec = run_spec_for_pipeline(task, project=name, project_version_id=version_id)
    if args is not None:
        spec = with_args(spec, args)
    try:
        with _client(None) as client:
            run = client.submit_run(spec)
            click.echo(f"ame: run {run.id} queued (pipeline {task.name}, {len(pipeline_labels(spec))} steps)", err=True)
            if not follow:
                click.echo(run.id)
                return 0
            if not download:
                return _follow_or_detach(client, run.id, follow_run=follow_pipeline)

            def bring_back() -> None:
                _bring_back_pipeline(client, run.id, project_dir, name, version_id, pushed_at)

            return _follow_or_detach(client, run.id, on_end=bring_back, follow_run=follow_pipeline)
    except AmeError as exc:
        raise _fail(exc) from None


def _bring_back(
    client: Client, run_id: str, project_dir: Path, project: str, version_id: str, pushed_at: float
) -> None:
    """Download the ended run's artifacts into the project; a file edited here since the push is kept."""
    _download_into(client, run_id, [run_id], project_dir, project, version_id, pushed_at, what="artifact(s)")


def _bring_back_pipeline(
    client: Client, parent_id: str, project_dir: Path, project: str, version_id: str, pushed_at: float
) -> None:
    """After a remote pipeline, the project directory holds what its steps wrote, as after `-l` (where the steps
    share it): every step's saved files, a later step's winning a path, downloaded as one set."""
    from ame.cli.pipeline_follow import step_runs
    from ame.run_specs import pipeline_labels
    from ame.sdk import AmeError

    try:
        parent = client.get_run(parent_id)
        runs = step_runs(client, parent)
    except AmeError as exc:
        click.echo(f"ame: the steps' files could not be listed ({exc})", err=True)
        return
    ordered = [runs[label].id for label in pipeline_labels(parent.spec) if label in runs]
    _download_into(client, parent_id, ordered, project_dir, project, version_id, pushed_at, what="file(s) of the steps")


def _download_into(
    client: Client,
    run_id: str,
    sources: list[str],
    project_dir: Path,
    project: str,
    version_id: str,
    pushed_at: float,
    *,
    what: str,
) -> None:
    """Download the artifacts of the runs `sources` (in order: a later one wins a path) into the project; a file
    edited here since the push is kept and the run's copy is written beside it (named after `run_id`)."""
    from ame.cli.artifact_downloads import DownloadError, Protection, download, select
    from ame.domain.artifacts import Artifact
    from ame.sdk import AmeError

    def manifest() -> dict[str, str]:
        return {entry.path: entry.sha256 for entry in client.get_version(project, version_id)[1]}

    try:
        chosen: dict[str, tuple[str, Artifact]] = {}
        for source in sources:
            for artifact in select(client.list_run_artifacts(source)):
                chosen[artifact.path] = (source, artifact)
        if not chosen:
            return
        owner = {path: source for path, (source, _) in chosen.items()}
        report = download(
            [artifact for _, (_, artifact) in sorted(chosen.items())],
            lambda artifact: client.download_artifact(owner[artifact.path], artifact.path, attempt=artifact.attempt),
            project_dir,
            run_id=run_id,
            protect=Protection(manifest, pushed_at),
        )
    except (AmeError, DownloadError, OSError) as exc:
        again = sources[0] if len(sources) == 1 else "STEP_RUN_ID"
        click.echo(f"ame: the {what} could not be downloaded ({exc}); `ame artifacts get {again}` retries", err=True)
        return
    if report.written:
        click.echo(f"ame: {len(report.written)} {what} downloaded: {', '.join(report.written[:10])}", err=True)
    for local, beside in report.kept_local:
        click.echo(f"ame: {local} changed here since the push and was kept; the run's version is in {beside}", err=True)


def _push_version(project_dir: Path, project: str) -> ProjectVersion:
    """Push the directory first, so the run names the exact files it runs with (uploads only what changed)."""
    from ame.cli.project_commands import describe, push
    from ame.cli.template_sources import describe_pins

    with _client(None) as client:
        result = push(client, project_dir, project)
    click.echo(describe(result), err=True)
    if pins := describe_pins(result.version.template_pins):
        click.echo(pins, err=True)
    return result.version


def _resolve_pinned(project: Project, task_name: str, pins: dict[str, str]) -> ResolvedTask:
    """The task resolved with the versions of other projects the server pinned when it took the push."""
    from ame.cli.template_sources import pinned_templates
    from ame.sdk import AmeError
    from ame.spec import SpecError, resolve_task

    try:
        with _client(None) as client:
            task = resolve_task(project, task_name, external_templates=pinned_templates(client, pins))
    except (SpecError, AmeError) as exc:
        raise click.ClickException(str(exc)) from None
    return task


def register(cli: click.Group) -> None:
    target_option = server_option

    @cli.group()
    def runs() -> None:
        """Runs on an AME server: submit, follow, get, list, cancel."""

    @runs.command("submit", context_settings={"allow_interspersed_args": False})
    @click.option("--project", default="default", show_default=True)
    @click.option("--task", "task_name", default="adhoc", show_default=True)
    @click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="Environment variable (repeatable).")
    @click.option("--timeout", default=None, help="Seconds, or a duration like 30s, 5m, 1h.")
    @click.option("--follow/--no-follow", default=True, show_default=True, help="Stream the output until it ends.")
    @target_option
    @args_options
    @click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
    def submit(
        project: str,
        task_name: str,
        env: tuple[str, ...],
        timeout: str | None,
        follow: bool,
        target: str | None,
        args_json: str | None,
        args_file: Path | None,
        command: tuple[str, ...],
    ) -> None:
        """Run COMMAND on the server; with --follow, print its output and exit with its exit code.

        COMMAND is one shell command line ("make train && make eval") or a program and its arguments.

        Example: ame runs submit -- python -c "print('hello')"
        """
        from pydantic import ValidationError

        from ame.domain import EnvVar, RunSpec

        environment = []
        for item in env:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--env")
            environment.append(EnvVar(key=key, value=value))
        try:
            spec = RunSpec(
                project=project,
                task=task_name,
                command=_command_line(command),
                environment=environment,
                timeout_seconds=_parse_timeout(timeout),
                args=parse_args_options(args_json, args_file),
            )
        except (ValidationError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        sys.exit(submit_and_follow(spec, target=target, follow_output=follow))

    @runs.command("follow")
    @click.argument("run_id")
    @click.option("--from-seq", default=0, show_default=True, help="First line to show.")
    @target_option
    def follow_cmd(run_id: str, from_seq: int, target: str | None) -> None:
        """Print a run's output from the start, follow it live, and exit with the run's exit code."""
        from ame.cli.pipeline_follow import follow_pipeline
        from ame.sdk import AmeError

        try:
            with _client(target) as client:
                if client.get_run(run_id).spec.pipeline:
                    code = follow_pipeline(client, run_id)
                else:
                    code = follow(client, run_id, from_seq=from_seq)
        except AmeError as exc:
            raise _fail(exc) from None
        sys.exit(code)

    @runs.command("get")
    @click.argument("run_id")
    @click.option("--json", "as_json", is_flag=True, help="Print the full record as JSON.")
    @target_option
    def get(run_id: str, as_json: bool, target: str | None) -> None:
        """Show one run."""
        from ame.sdk import AmeError

        try:
            with _client(target) as client:
                run = client.get_run(run_id)
                _print_run(run, as_json, detail=True)
                if run.spec.pipeline and not as_json:
                    from ame.cli.pipeline_follow import step_runs, steps_table

                    click.echo(steps_table(run, step_runs(client, run)))
        except AmeError as exc:
            raise _fail(exc) from None

    @runs.command("list")
    @click.option("--project", default=None)
    @click.option("--task", "task_name", default=None)
    @click.option("--state", "states", multiple=True, help="Only runs in this state (repeatable).")
    @click.option("--limit", default=20, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @target_option
    def list_cmd(
        project: str | None,
        task_name: str | None,
        states: tuple[str, ...],
        limit: int,
        as_json: bool,
        target: str | None,
    ) -> None:
        """List runs, newest first."""
        from ame.domain import RunState
        from ame.sdk import AmeError

        try:
            wanted = [RunState(s) for s in states]
        except ValueError:
            raise click.BadParameter(
                f"states are: {', '.join(s.value for s in RunState)}", param_hint="--state"
            ) from None
        try:
            with _client(target) as client:
                found = client.list_runs(project=project, task=task_name, states=wanted or None, limit=limit)
        except AmeError as exc:
            raise _fail(exc) from None
        if as_json:
            click.echo(json.dumps([r.model_dump(mode="json") for r in found], indent=2))
            return
        click.echo(f"{'RUN':36}  {'PROJECT/TASK':28}  {'STATE':10}  {'EXIT':>4}  CREATED")
        for r in found:
            code = "" if r.exit_code is None else str(r.exit_code)
            name = f"{r.spec.project}/{r.spec.task}"
            click.echo(f"{r.id:36}  {name[:28]:28}  {r.state.value:10}  {code:>4}  {_age(r.created_at)}")

    @runs.command("resume")
    @click.argument("run_id")
    @click.option("--follow/--no-follow", default=True, show_default=True, help="Stream the output until it ends.")
    @target_option
    def resume(run_id: str, follow: bool, target: str | None) -> None:
        """Run a failed or cancelled pipeline again from its failed steps, reusing the steps that succeeded (and
        the files they saved). The resumed run is a new pipeline run; its steps table shows the reused steps."""
        from ame.cli.pipeline_follow import follow_pipeline
        from ame.sdk import AmeError

        try:
            with _client(target) as client:
                old = client.get_run(run_id)
                if not old.spec.pipeline:
                    raise click.ClickException(f"run {run_id} is not a pipeline run; `ame task run` runs it again")
                run = client.submit_run(old.spec.model_copy(update={"resume_from": old.id}))
                click.echo(f"ame: run {run.id} queued (resumes {old.id})", err=True)
                if not follow:
                    click.echo(run.id)
                    return
                code = _follow_or_detach(client, run.id, follow_run=follow_pipeline)
        except AmeError as exc:
            raise _fail(exc) from None
        sys.exit(code)

    @runs.command("cancel")
    @click.argument("run_id")
    @click.option("--reason", default="", help="Recorded with the run.")
    @target_option
    def cancel(run_id: str, reason: str, target: str | None) -> None:
        """Cancel a run that has not ended."""
        from ame.sdk import AmeError

        try:
            with _client(target) as client:
                _print_run(client.cancel_run(run_id, reason), False)
        except AmeError as exc:
            raise _fail(exc) from None


def _command_line(args: tuple[str, ...]) -> str:
    """One argument is a shell command line as typed (`"make train && make eval"`); several are an argv,
    quoted so the shell sees exactly those arguments (`-- python -c "print('hi')"`)."""
    import shlex

    return args[0] if len(args) == 1 else shlex.join(args)


def _parse_timeout(value: str | None) -> float | None:
    if value is None:
        return None
    from ame.domain.durations import parse_timeout

    return parse_timeout(value)
