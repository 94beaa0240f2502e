"""A small local index of finished runs, so `ame artifacts list RUN` can find a run by id alone."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RunRecord", "RunRecordNotFoundError", "find_run_record", "write_run_record"]


class RunRecordNotFoundError(Exception):
    """No run, or more than one, matches the id given."""


@dataclass(frozen=True)
class StepRecord:
    name: str
    state: str
    exit_code: int | None
    duration_seconds: float | None
    reason: str | None = None


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    project: str
    task: str
    state: str
    exit_code: int
    started_at: float
    finished_at: float
    artifact_prefix: str
    artifacts: list[str] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    reason: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        steps = [StepRecord(**step) for step in data.pop("steps", [])]
        return cls(**data, steps=steps)


def write_run_record(directory: Path, record: RunRecord) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{record.run_id}.json"
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(json.dumps(asdict(record), indent=2))
    os.replace(staging, path)
    return path


def find_run_record(directory: Path, run_id: str) -> RunRecord:
    """The run whose id is `run_id` or starts with it (like a short git hash)."""
    exact = directory / f"{run_id}.json"
    if exact.is_file():
        return RunRecord.from_json(json.loads(exact.read_text()))
    matches = sorted(directory.glob(f"{run_id}*.json")) if directory.is_dir() and run_id else []
    if not matches:
        raise RunRecordNotFoundError(f"no local run {run_id!r} (runs are recorded under {directory})")
    if len(matches) > 1:
        ids = ", ".join(path.stem for path in matches[:5])
        raise RunRecordNotFoundError(f"run id {run_id!r} is ambiguous: {ids}")
    return RunRecord.from_json(json.loads(matches[0].read_text()))
