"""`ame loops info`: the PEACH task loops of an organisation (seed 002's task information view)."""

from __future__ import annotations

import json
from pathlib import Path

import click


def register(cli: click.Group) -> None:
    @cli.group()
    def loops() -> None:
        """PEACH task loops: tasks of peach.yaml / peach.conf/*.yaml run one after another, indefinitely."""

    @loops.command("info")
    @click.option("--org", "organisation", default=None, help="The organisation (default: the token's own).")
    @click.option("--task", default=None, help="Only this task's executions (and graph, and logs).")
    @click.option(
        "--logs", "show_logs", is_flag=True, help="Print the logs of the ended executions shown, all together."
    )
    @click.option("--run", "run_id", default=None, help="Print the logs of this execution's run only.")
    @click.option(
        "--plot",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Draw the executions' duration over time into this PNG (successes as blue dots, failures as red crosses).",
    )
    @click.option("--limit", type=click.IntRange(1, 10000), default=1000, help="The most recent executions read.")
    @click.option("--json", "as_json", is_flag=True, help="Print tasks and executions as JSON.")
    @click.option(
        "--url", default=None, help="REST URL of the AME server (default: $AME_REST_URL or the local server)."
    )
    def info_cmd(
        organisation: str | None,
        task: str | None,
        show_logs: bool,
        run_id: str | None,
        plot: Path | None,
        limit: int,
        as_json: bool,
        url: str | None,
    ) -> None:
        """Each task's state (PENDING, RUNNING, FINISHED), last status, start and duration, successes and
        failures; then the executions (version, start, status, duration, run id) oldest first."""
        from ame.peach.history import (
            EXECUTION_HEADERS,
            TASK_HEADERS,
            LoopsError,
            executions_rows,
            fetch_info,
            fetch_logs,
            plot_durations,
            rest_client,
            save_plot,
            tasks_rows,
            text_table,
        )

        try:
            with rest_client(url) as client:
                info = fetch_info(client, organisation=organisation, task=task, limit=limit)
                executions = [e for e in info.executions if task is None or e.task == task]
                logs = []
                if run_id or show_logs:
                    # A running execution's log stream stays open until its run ends: `--logs` would wait on it.
                    runs = [run_id] if run_id else [e.run_id for e in executions if e.run_id and e.status != "running"]
                    logs = fetch_logs(client, runs)
        except LoopsError as exc:
            raise click.ClickException(str(exc)) from None
        if plot is not None:
            save_plot(plot_durations(executions, title=task or info.organisation), plot)
            click.echo(
                f"ame: plotted {len([e for e in executions if e.duration_seconds is not None])} "
                f"execution(s) into {plot}",
                err=True,
            )
        if as_json:
            click.echo(json.dumps(info.model_dump(mode="json"), indent=2))
            return
        click.echo(f"organisation {info.organisation}")
        click.echo(text_table(TASK_HEADERS, tasks_rows(info)))
        click.echo("")
        click.echo(text_table(EXECUTION_HEADERS, executions_rows(executions)))
        for line in logs:
            click.echo(f"{line.run_id[:8]} {line.at} {line.text}")
