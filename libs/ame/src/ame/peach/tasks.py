"""A PEACH task as the run the loop submits: the pip executor (dependencies through its environment cache), the
notebook's script as the command, the task's timeout, and the loop it queues in."""

from __future__ import annotations

import shlex

from ame.domain.executors import PIP_REQUIREMENTS_ENV, ExecutorKind
from ame.domain.limits import MAX_COMMAND_BYTES
from ame.domain.runs import EnvVar, ExecutorRef, RunSpec
from ame.peach.notebooks import NotebookError
from ame.spec.peach import PeachTaskDef

SPARK_MASTER_ENV = "AME_SPARK_MASTER"


def run_spec_for_peach_task(
    task: PeachTaskDef, script: str, *, project: str, project_version_id: str, spark_master: str = ""
) -> RunSpec:
    command = f"python -c {shlex.quote(script)}"
    if len(command.encode()) > MAX_COMMAND_BYTES:
        raise NotebookError(
            f"{task.notebook}: the code to run is over {MAX_COMMAND_BYTES // 1024} KiB; run only the entry "
            "function's cell (without full_notebook) or move code into modules"
        )
    environment = [EnvVar(key="AME_PEACH_TASK", value=task.name)]
    if task.dependencies:
        environment.append(EnvVar(key=PIP_REQUIREMENTS_ENV, value="\n".join(task.dependencies)))
    if task.executor == "spark" and spark_master:
        environment.append(EnvVar(key=SPARK_MASTER_ENV, value=spark_master))
    return RunSpec(
        project=project,
        task=task.name,
        command=command,
        executor=ExecutorRef(kind=ExecutorKind.PIP),
        environment=environment,
        timeout_seconds=task.timeout_seconds,
        project_version_id=project_version_id,
        loop=task.loop,
        labels={"ame.peach/loop": task.loop_name},
    )
