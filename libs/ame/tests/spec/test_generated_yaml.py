"""Whatever YAML arrives, the only exception the spec raises is SpecError."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ame.spec import Problem, SpecError, load_project_text, resolve_task

_KEYS = [
    "project",
    "name",
    "tasks",
    "templates",
    "executor",
    "resources",
    "cpu",
    "memory",
    "storage",
    "nvidia.com/gpu",
    "secrets",
    "environment",
    "env",
    "key",
    "val",
    "injectAs",
    "vault",
    "fromTemplate",
    "taskRef",
    "taskref",
    "pipeline",
    "triggers",
    "schedule",
    "artifacts",
    "paths",
    "saveChangedFiles",
    "dataSets",
    "ref",
    "models",
    "training",
    "task",
    "timeout",
    "retries",
    "command",
    "pythonVersion",
    "image",
    "runcommand",
    "gpus",
    "vram",
    "recurring_tasks",
    "projectname",
    "<<",
]
_TAGS = ["", "!poetry ", "!pip ", "!pipEnv ", "!mlflow ", "!custom ", "!ame ", "!vault ", "!bogus "]
_scalars = st.one_of(
    st.sampled_from(
        ["a", "t", "3.11", "500m", "0.5", "10 GB", "2.5Gi", "1h30m", "-1", "0 12 * * *", "~", "true", "''"]
    ),
    st.integers(-5, 5).map(str),
    st.text(alphabet="ab:-[]{}!&*#'\" \n\t", max_size=6),
)


def _render(value: Any, indent: int) -> str:
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "\n" + "".join(f"{pad}{key}: {_render(item, indent + 2)}\n" for key, item in value.items()).rstrip("\n")
    if isinstance(value, list):
        if not value:
            return "[]"
        return "\n" + "".join(f"{pad}- {_render(item, indent + 2).lstrip()}\n" for item in value).rstrip("\n")
    return str(value)


_trees = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(_KEYS), children, max_size=5),
        st.tuples(st.sampled_from(_TAGS), st.dictionaries(st.sampled_from(_KEYS), _scalars, max_size=4)).map(
            lambda tagged: tagged[0] + "{" + ", ".join(f"{k}: {v}" for k, v in tagged[1].items()) + "}"
        ),
    ),
    max_leaves=30,
)


def _check(text: str) -> None:
    """Load and resolve; any exception other than SpecError fails the test by propagating."""
    problems: list[Problem] = []
    try:
        project = load_project_text(text)
        for name in project.task_names():
            with contextlib.suppress(SpecError):
                resolve_task(project, name)
    except SpecError as error:
        problems = error.problems
        assert problems, "a SpecError always carries problems"
    assert all(problem.message and (problem.line is None or problem.line >= 1) for problem in problems)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_KEYS), _trees, max_size=5))
def test_structured_yaml_raises_only_spec_errors(document: dict[str, Any]) -> None:
    _check(_render(document, 0).lstrip("\n"))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_spec_errors(text: str) -> None:
    _check(text)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "tasks:\n",
                "  - name: t\n",
                "    executor: !poetry\n",
                "      command: x\n",
                "    pipeline:\n",
                "      - taskRef: t\n",
                "      - - taskref: u\n",
                "    fromTemplate: t\n",
                "templates:\n",
                "  - name: u\n",
                "    resources: {cpu: 1}\n",
                "      pythonVersion: 3.11\n",
                "  &a x: *a\n",
                "    secrets: [!vault {}]\n",
            ]
        ),
        max_size=12,
    )
)
def test_spliced_project_lines_raise_only_spec_errors(lines: list[str]) -> None:
    _check("".join(lines))
