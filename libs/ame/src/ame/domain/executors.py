"""The executors a task can name, defined once for `ame.yml`, the run spec, the wire codecs and the runner."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["EXECUTOR_KINDS", "ExecutorKind"]


class ExecutorKind(StrEnum):
    """How a task's environment is built before its command runs (`!poetry`, `!pip`, ... in `ame.yml`)."""

    POETRY = "poetry"
    PIP = "pip"
    PIPENV = "pipenv"
    MLFLOW = "mlflow"
    CUSTOM = "custom"


# In the order messages list them ("executors are !poetry, !pip, ...").
EXECUTOR_KINDS: tuple[ExecutorKind, ...] = tuple(ExecutorKind)


# Requirements a run names beside its requirements.txt, one a line (a PEACH task's `dependencies`): the pip
# recipe installs them after the file's and counts them in its environment's cache key.
PIP_REQUIREMENTS_ENV = "AME_PIP_REQUIREMENTS"
