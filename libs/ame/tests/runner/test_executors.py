"""Each executor against a real small project it builds; network installs are marked slow."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from ame.runner.home import AmeHome
from ame.runner.interpreters import InterpreterNotFoundError, find_interpreter
from ame.runner.setup_steps import SetupContext, run_setup_step
from ame.runner.task_runs import LocalRunner
from ame.runner.tools import provision_tool

from .support import ProjectFactory, RecordingOutput, load_task, run_settings

SHOW_SIX = "python -c 'import six, sys; print(six.__version__, sys.prefix)'"


def _context(home: AmeHome, project: Path, output: RecordingOutput) -> SetupContext:
    return SetupContext(home, project, dict(os.environ), output.sink(None))


async def _run(home: AmeHome, project: Path, task: str) -> tuple[RecordingOutput, int, bool]:
    output = RecordingOutput()
    result = await LocalRunner(run_settings(home, project)).run(load_task(project, task), output)
    assert result.state == "succeeded", (result, output.lines, output.notices)
    built = any("built environment" in notice for notice in output.notices)
    return output, result.exit_code, built


async def _python_3_10_or_skip() -> None:
    try:
        await find_interpreter("3.10")
    except InterpreterNotFoundError:
        pytest.skip("no Python 3.10 on this machine")


async def test_custom_runs_the_command_as_is(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    project = make_project(
        """
        tasks:
          - name: plain
            executor: !custom
              command: 'echo "venv=${VIRTUAL_ENV:-none}"'
        """
    )
    output, _, built = await _run(ame_home, project, "plain")
    assert output.of(None) == ["venv=none"]
    assert not built


async def test_custom_honours_python_version(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    await _python_3_10_or_skip()
    project = make_project(
        """
        tasks:
          - name: py
            executor: !custom
              pythonVersion: "3.10"
              command: python -c 'import sys; print(sys.version_info[:2])'
        """
    )
    output, _, _ = await _run(ame_home, project, "py")
    assert output.of(None) == ["(3, 10)"]


async def test_unknown_python_version_names_the_available_ones(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    project = make_project(
        """
        tasks:
          - name: py
            executor: !pip
              pythonVersion: "3.99"
              command: python -V
        """
    )
    output = RecordingOutput()
    result = await LocalRunner(run_settings(ame_home, project)).run(load_task(project, "py"), output)
    assert result.state == "failed"
    assert result.reason is not None
    assert "no Python 3.99 found" in result.reason
    assert "available: " in result.reason
    assert "3.11" in result.reason.split("available: ")[1]


@pytest.mark.slow
async def test_pip_builds_once_and_rebuilds_on_change(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    await _python_3_10_or_skip()
    project = make_project(
        f"""
        tasks:
          - name: show
            executor: !pip
              pythonVersion: "3.10"
              command: {SHOW_SIX}
        """,
        {"requirements.txt": "six\n"},
    )
    output, _, built = await _run(ame_home, project, "show")
    _, prefix = output.of(None)[0].split()
    assert built
    assert prefix.startswith(str(ame_home.environments))
    _, _, built_again = await _run(ame_home, project, "show")
    assert not built_again
    (project / "requirements.txt").write_text("six==1.16.0\n")
    output, _, rebuilt = await _run(ame_home, project, "show")
    assert rebuilt
    assert output.of(None)[0].split()[0] == "1.16.0"


@pytest.mark.slow
async def test_pip_concurrent_runs_share_one_build(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    project = make_project(
        f"""
        tasks:
          - name: show
            executor: !pip
              command: {SHOW_SIX}
        """,
        {"requirements.txt": "six\n"},
    )
    results = await asyncio.gather(*(_run(ame_home, project, "show") for _ in range(3)))
    assert sum(built for _, _, built in results) == 1
    assert len({output.of(None)[0] for output, _, _ in results}) == 1


# This workplace reaches PyPI's simple index but not its JSON API, which poetry's default source
# uses; the test project therefore names the simple index as its source.
POETRY_PYPROJECT = """
[project]
name = "demo"
version = "0.1.0"
requires-python = ">=3.10"
dependencies = ["six>=1.16"]

[tool.poetry]
package-mode = false

[[tool.poetry.source]]
name = "pypi-simple"
url = "https://pypi.org/simple/"
priority = "primary"
"""


@pytest.fixture(scope="session")
def tools_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One AME home for tool-using tests, so poetry/pipenv are provisioned once per session."""
    return tmp_path_factory.mktemp("ame-tools-home")


@pytest.mark.slow
async def test_poetry(tools_home: Path, make_project: ProjectFactory) -> None:
    home = AmeHome(tools_home)
    project = make_project(
        f"""
        tasks:
          - name: show
            executor: !poetry
              pythonVersion: "3.11"
              command: {SHOW_SIX}
        """,
        {"pyproject.toml": POETRY_PYPROJECT},
    )
    output = RecordingOutput()
    context = _context(home, project, output)
    async with provision_tool("poetry", context) as poetry:
        lock_env = {**context.base_env, "POETRY_VIRTUALENVS_PATH": str(tools_home / "lock-venvs")}
        await run_setup_step(context, [str(poetry), "lock"], env=lock_env)
    output, _, built = await _run(home, project, "show")
    assert built
    assert output.of(None)[0].startswith("1.17")
    _, _, built_again = await _run(home, project, "show")
    assert not built_again


@pytest.mark.slow
async def test_pipenv(tools_home: Path, make_project: ProjectFactory) -> None:
    home = AmeHome(tools_home)
    project = make_project(
        f"""
        tasks:
          - name: show
            executor: !pipenv
              command: {SHOW_SIX}
        """,
        {
            "Pipfile": """
        [[source]]
        url = "https://pypi.org/simple"
        verify_ssl = true
        name = "pypi"

        [packages]
        six = "==1.16.0"

        [requires]
        python_version = "3.11"
        """
        },
    )
    output = RecordingOutput()
    context = _context(home, project, output)
    lock_env = {**context.base_env, "PIPENV_IGNORE_VIRTUALENVS": "1", "WORKON_HOME": str(tools_home / "w")}
    lock_env.pop("VIRTUAL_ENV", None)
    async with provision_tool("pipenv", context) as pipenv:
        await run_setup_step(context, [str(pipenv), "lock"], env=lock_env)
    output, _, built = await _run(home, project, "show")
    assert built
    version, prefix = output.of(None)[0].split()
    assert version == "1.16.0"
    assert prefix.startswith(str(home.environments))


@pytest.mark.slow
async def test_mlflow_runs_the_mlproject_with_the_local_env_manager(
    ame_home: AmeHome, make_project: ProjectFactory
) -> None:
    project = make_project(
        """
        tasks:
          - name: train
            executor: !mlflow {}
        """,
        {
            "MLproject": """
        name: demo
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
        dependencies: [six]
        """,
            "train.py": """
        import sys, six, mlflow
        mlflow.log_param("alpha", sys.argv[1])
        print("trained", sys.argv[1], six.__version__)
        """,
        },
    )
    output, _, built = await _run(ame_home, project, "train")
    assert built
    assert output.of(None) == ["trained 0.5 1.17.0"]
    assert (project / "mlruns").is_dir()


async def test_pip_installs_the_requirements_a_run_names_and_keys_its_environment_on_them(
    ame_home: AmeHome, make_project: ProjectFactory
) -> None:
    # AME_PIP_REQUIREMENTS: a PEACH task's `dependencies`, beside (here: without) a requirements.txt.
    project = make_project(
        f"""
        tasks:
          - name: show
            executor: !pip
              command: {SHOW_SIX}
            environment:
              - key: AME_PIP_REQUIREMENTS
                val: "six==1.16.0"
        """,
        {},
    )
    output, _, built = await _run(ame_home, project, "show")
    assert built and output.of(None)[0].split()[0] == "1.16.0"
    _, _, built_again = await _run(ame_home, project, "show")
    assert not built_again
    text = (project / "ame.yml").read_text().replace('"six==1.16.0"', '"six==1.15.0"')
    (project / "ame.yml").write_text(text)
    output, _, rebuilt = await _run(ame_home, project, "show")
    assert rebuilt and output.of(None)[0].split()[0] == "1.15.0"
