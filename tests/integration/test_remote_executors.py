"""poetry, pipenv and mlflow tasks run remotely as with `-l`: the launcher builds the same environment from the
version's lock files in its own cache. Real installs from the package index, so marked slow."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from ame.runner.home import AmeHome
from ame.runner.setup_steps import SetupContext, run_setup_step
from ame.runner.tools import provision_tool
from tests.integration.clients import Grpc
from tests.integration.test_remote_tasks import _push, _Recording, _run_locally, _run_remotely
from tests.stack_fixtures import Stack

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

SHOW_SIX = "python -c 'import six; print(\"six\", six.__version__)'"

# The index is reached through its simple API only here (see libs/ame/tests/runner/test_executors.py).
POETRY_PYPROJECT = """
[project]
name = "remote"
version = "0.1.0"
requires-python = ">=3.10"
dependencies = ["six==1.16.0"]

[tool.poetry]
package-mode = false

[[tool.poetry.source]]
name = "pypi-simple"
url = "https://pypi.org/simple/"
priority = "primary"
"""

PIPFILE = """
[[source]]
url = "https://pypi.org/simple"
verify_ssl = true
name = "pypi"

[packages]
six = "==1.16.0"

[requires]
python_version = "3.11"
"""


def _write(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text).lstrip())
    return root


async def _lock(tool: str, root: Path, home: Path, tmp_path: Path) -> None:
    output = _Recording()
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.update(POETRY_VIRTUALENVS_PATH=str(tmp_path / "lock-venvs"), PIPENV_IGNORE_VIRTUALENVS="1")
    env["WORKON_HOME"] = str(tmp_path / "workon")
    context = SetupContext(AmeHome(home), root, env, output)
    async with provision_tool(tool, context) as executable:
        await run_setup_step(context, [str(executable), "lock"], env=env)


async def test_poetry_task(stack: Stack, client: Grpc, tmp_path: Path) -> None:
    root = _write(
        tmp_path / "project",
        {
            "ame.yml": f"""
            project: remote
            tasks:
              - name: show
                executor: !poetry
                  pythonVersion: "3.11"
                  command: {SHOW_SIX}
            """,
            "pyproject.toml": POETRY_PYPROJECT,
        },
    )
    await _lock("poetry", root, tmp_path / "home", tmp_path)
    version = await _push(stack, root, tmp_path)
    local = await _run_locally(root, tmp_path / "home", "show")
    remote = await _run_remotely(stack, client, root, version, "show")
    assert local == (["six 1.16.0"], 0)
    assert remote[:2] == local, remote[2]


async def test_pipenv_task(stack: Stack, client: Grpc, tmp_path: Path) -> None:
    root = _write(
        tmp_path / "project",
        {
            "ame.yml": f"""
            project: remote
            tasks:
              - name: show
                executor: !pipenv
                  command: {SHOW_SIX}
            """,
            "Pipfile": PIPFILE,
        },
    )
    await _lock("pipenv", root, tmp_path / "home", tmp_path)
    version = await _push(stack, root, tmp_path)
    local = await _run_locally(root, tmp_path / "home", "show")
    remote = await _run_remotely(stack, client, root, version, "show")
    assert local == (["six 1.16.0"], 0)
    assert remote[:2] == local, remote[2]


async def test_mlflow_task(stack: Stack, client: Grpc, tmp_path: Path) -> None:
    root = _write(
        tmp_path / "project",
        {
            "ame.yml": """
            project: remote
            tasks:
              - name: train
                executor: !mlflow {}
            """,
            "MLproject": """
            name: remote
            python_env: python_env.yaml
            entry_points:
              main:
                parameters:
                  alpha: {type: float, default: 0.5}
                command: "python train.py {alpha}"
            """,
            "python_env.yaml": """
            python: "3.11"
            build_dependencies: [pip]
            dependencies: [six==1.16.0]
            """,
            "train.py": """
            import sys, six, mlflow
            mlflow.log_param("alpha", sys.argv[1])
            print("trained", sys.argv[1], six.__version__)
            """,
        },
    )
    version = await _push(stack, root, tmp_path)
    local = await _run_locally(root, tmp_path / "home", "train")
    remote = await _run_remotely(stack, client, root, version, "train")
    assert local == (["trained 0.5 1.16.0"], 0)
    assert remote[:2] == local, remote[2]
