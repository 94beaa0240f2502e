"""The PEACH task information view (seed 002): tasks, executions, logs and the duration graph, for `ame loops
info` in a terminal and `initialize_tasks_info()` in a notebook. Read over the server's REST api."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ame.domain.loops import SUCCESS, LoopExecution, LoopsInfo
from ame.sdk import tables as sdk_tables

if TYPE_CHECKING:
    import httpx
    from matplotlib.figure import Figure


class LoopsError(Exception):
    """The server refused or could not be reached; the message says why."""


def rest_client(url: str | None = None) -> httpx.Client:
    import httpx

    from ame.sdk.credentials import bearer, discover_rest_url, discover_token, http_verify

    return httpx.Client(
        base_url=url or discover_rest_url(), timeout=30.0, headers=bearer(discover_token()), verify=http_verify()
    )


def _checked(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        try:
            message = response.json().get("error") or response.text
        except ValueError:
            message = response.text
        raise LoopsError(f"{response.status_code}: {message}")
    return response


def fetch_info(
    client: httpx.Client, *, organisation: str | None = None, task: str | None = None, limit: int = 1000
) -> LoopsInfo:
    import httpx

    params: dict[str, str | int] = {"limit": limit}
    if organisation:
        params["organisation"] = organisation
    if task:
        params["task"] = task
    try:
        response = _checked(client.get("/v1/loops", params=params))
    except httpx.HTTPError as exc:
        raise LoopsError(f"cannot reach the AME server at {client.base_url} ({exc})") from None
    return LoopsInfo.model_validate(response.json())


@dataclass(frozen=True)
class LogLine:
    run_id: str
    at: str
    text: str


def fetch_logs(client: httpx.Client, run_ids: Sequence[str]) -> list[LogLine]:
    """Every line of these runs (ended runs: each stream closes at its end), run after run."""
    import httpx

    out: list[LogLine] = []
    for run_id in run_ids:
        try:
            with client.stream("GET", f"/v1/runs/{run_id}/logs", timeout=None) as response:
                _checked(response)
                out.extend(_sse_lines(run_id, response.iter_lines()))
        except httpx.HTTPError as exc:
            raise LoopsError(f"cannot read the logs of run {run_id} ({exc})") from None
    return out


def _sse_lines(run_id: str, lines: Iterator[str]) -> Iterator[LogLine]:
    event = ""
    for raw in lines:
        if raw.startswith("event: "):
            event = raw[7:]
        elif raw.startswith("data: ") and event == "lines":
            for line in json.loads(raw[6:])["lines"]:
                yield LogLine(run_id, str(line.get("at", "")), str(line.get("text", "")))
        elif raw.startswith("data: ") and event == "end":
            return


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _seconds(value: float | None) -> str:
    return f"{value:.1f}s" if value is not None else "-"


def tasks_rows(info: LoopsInfo) -> list[list[str]]:
    return [
        [
            t.task,
            t.project,
            t.loop,
            t.state,
            t.last_status or "-",
            _when(t.last_started_at),
            _seconds(t.last_duration_seconds),
            str(t.successes),
            str(t.failures),
        ]
        for t in info.tasks
    ]


TASK_HEADERS = ["TASK", "PROJECT", "LOOP", "STATE", "LAST STATUS", "LAST START", "DURATION", "SUCCESSES", "FAILURES"]
EXECUTION_HEADERS = ["ID", "TASK", "VERSION", "START", "STATUS", "DURATION", "RUN"]


def executions_rows(executions: Sequence[LoopExecution]) -> list[list[str]]:
    return [
        [
            str(e.id),
            e.task,
            e.version,
            _when(e.started_at),
            e.status + (f" ({e.reason})" if e.reason and e.status != SUCCESS else ""),
            _seconds(e.duration_seconds),
            e.run_id or "-",
        ]
        for e in executions
    ]


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    """The loop's tables: aligned as the SDK's, without the seed's rule line."""
    return sdk_tables.text_table(headers, rows, rule=False)


html_table = sdk_tables.html_table


@dataclass(frozen=True)
class PlotPoint:
    started_at: Any  # datetime
    duration_seconds: float
    succeeded: bool


def plot_points(executions: Sequence[LoopExecution]) -> list[PlotPoint]:
    """What the graph shows: each ended execution's duration at its start, a success or a failure."""
    return [
        PlotPoint(e.started_at, e.duration_seconds, e.status == SUCCESS)
        for e in executions
        if e.duration_seconds is not None and e.status != "running"
    ]


def plot_durations(executions: Sequence[LoopExecution], title: str = "") -> Figure:
    """Duration over time: blue dots for successes, red crosses for failures (the seed's graph). Drawn with
    matplotlib's Agg backend (no display); the figure's two collections hold exactly `plot_points`."""
    from matplotlib.figure import Figure

    points = plot_points(executions)
    figure = Figure(figsize=(8, 3.5))
    axes = figure.add_subplot()
    ok = [p for p in points if p.succeeded]
    bad = [p for p in points if not p.succeeded]
    axes.scatter(
        [p.started_at for p in ok], [p.duration_seconds for p in ok], c="tab:blue", marker="o", label="success"
    )
    axes.scatter([p.started_at for p in bad], [p.duration_seconds for p in bad], c="red", marker="x", label="failure")
    axes.set_ylabel("duration (s)")
    axes.set_xlabel("start")
    axes.set_title(title or "task executions")
    axes.legend(loc="upper left")
    figure.autofmt_xdate()
    return figure


def save_plot(figure: Figure, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=100)


def _png_base64(figure: Figure) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return base64.b64encode(buffer.getvalue()).decode()


class TasksInfo:
    """The seed's task information notebook view: tasks, one task's executions, its duration graph, the logs."""

    def __init__(self, info: LoopsInfo, task: str | None, logs: list[LogLine]) -> None:
        self.info = info
        self.task = task
        self.logs = logs

    @property
    def executions(self) -> list[LoopExecution]:
        return [e for e in self.info.executions if self.task is None or e.task == self.task]

    def figure(self) -> Figure:
        return plot_durations(self.executions, title=self.task or self.info.organisation)

    def __str__(self) -> str:
        parts = [
            f"organisation {self.info.organisation}",
            text_table(TASK_HEADERS, tasks_rows(self.info)),
            "",
            text_table(EXECUTION_HEADERS, executions_rows(self.executions)),
        ]
        if self.logs:
            parts += ["", *(f"{line.at} {line.text}" for line in self.logs)]
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        logs = "\n".join(f"{line.at} {line.text}" for line in self.logs)
        return (
            f"<h4>Tasks of {html.escape(self.info.organisation)}</h4>"
            + html_table(TASK_HEADERS, tasks_rows(self.info))
            + f"<h4>Executions{' of ' + html.escape(self.task) if self.task else ''}</h4>"
            + html_table(EXECUTION_HEADERS, executions_rows(self.executions))
            + f'<img src="data:image/png;base64,{_png_base64(self.figure())}"/>'
            + f"<h4>Logs</h4><pre>{html.escape(logs)}</pre>"
        )


def initialize_tasks_info(
    organisation: str | None = None,
    task: str | None = None,
    *,
    run_id: str | None = None,
    url: str | None = None,
    limit: int = 1000,
) -> TasksInfo:
    """The task information view of seed 002 for a notebook: the organisation's tasks (the token's
    organisation by default), `task`'s executions (all tasks' without one) with their duration graph, and the
    logs of all those executions, or of one (`run_id`: "show below" in the seed's view)."""
    with rest_client(url) as client:
        info = fetch_info(client, organisation=organisation, task=task, limit=limit)
        chosen = [e for e in info.executions if (task is None or e.task == task) and e.run_id]
        runs = [run_id] if run_id else [e.run_id for e in chosen if e.run_id and e.status != "running"]
        logs = fetch_logs(client, runs)
    return TasksInfo(info, task, logs)
