"""Showing a local run in a terminal: task output as it comes, AME's notices, a summary table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from ame.runner.process import OutputSink, StreamName
from ame.runner.results import RunResult, StepResult

__all__ = ["TerminalOutput", "format_duration", "format_summary"]


class _TerminalSink:
    def __init__(self, out: TextIO, err: TextIO, prefix: str) -> None:
        self._out = out
        self._err = err
        self._prefix = prefix

    async def started(self, pid: int) -> None:
        pass

    async def line(self, stream: StreamName, text: str) -> None:
        target = self._out if stream == "stdout" else self._err
        target.write(f"{self._prefix}{text}\n")
        # Flushed per line: output must appear as the task prints it, not when a buffer fills.
        target.flush()


class TerminalOutput:
    """Task stdout to `out`, task stderr and AME's notices to `err`.

    Pipeline steps get a `[step] ` prefix, padded to the longest step name so columns line up
    while parallel steps interleave.
    """

    def __init__(self, out: TextIO, err: TextIO, *, step_names: Sequence[str] = ()) -> None:
        self._out = out
        self._err = err
        self._width = max((len(name) for name in step_names), default=0)

    def sink(self, step: str | None) -> OutputSink:
        prefix = "" if step is None else f"[{step}]".ljust(self._width + 2) + " "
        return _TerminalSink(self._out, self._err, prefix)

    async def notice(self, text: str) -> None:
        self._err.write(f"ame: {text}\n")
        self._err.flush()


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_summary(result: RunResult) -> str:
    """A table of the steps of a pipeline run: step, state, duration (and exit code, reason)."""
    rows = [("STEP", "STATE", "DURATION", "EXIT", "REASON")]
    rows.extend(_row(step) for step in result.steps)
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)) + "  " + row[4]
        for row in rows
    ]
    total = format_duration(result.finished_at - result.started_at)
    lines.append(f"run {result.run_id} {result.state} in {total}")
    return "\n".join(line.rstrip() for line in lines)


def _row(step: StepResult) -> tuple[str, str, str, str, str]:
    exit_code = "-" if step.exit_code is None else str(step.exit_code)
    return (step.name, step.state, format_duration(step.duration_seconds), exit_code, step.reason or "")
