"""Turn a task's executor (pip, poetry, pipenv, mlflow, custom) into a command ready to spawn.

Python executors get a virtual environment from the cache, keyed by executor, interpreter and the
content of the files that define the dependencies; the task command then runs with that venv
activated the way `poetry run` / `pipenv run` activate it (VIRTUAL_ENV and PATH), without paying
the start-up of those tools on every run. The tools themselves are only used to build.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ame.domain.executors import PIP_REQUIREMENTS_ENV, ExecutorKind
from ame.runner.env_cache import Builder, EnvironmentCache
from ame.runner.interpreters import Interpreter, find_interpreter
from ame.runner.setup_steps import SetupContext, SetupError, run_setup_step
from ame.runner.tools import PINNED_TOOLS, provision_tool, uv_executable

__all__ = ["MLFLOW_REQUIREMENT", "ExecutorKind", "PreparedCommand", "prepare_command"]

# Bump when the way environments are built changes, so old entries are not reused.
_BUILD_LAYOUT = "1"
# mlflow-skinny has `mlflow run` and the file tracking store without the server's dependencies.
MLFLOW_REQUIREMENT = "mlflow-skinny==2.22.1"
_SHELL = "/bin/sh"


@dataclass(frozen=True)
class PreparedCommand:
    """The argv to spawn and how the executor changes the child's environment."""

    argv: list[str]
    path_prefix: list[Path] = field(default_factory=list)
    set_env: dict[str, str] = field(default_factory=dict)
    unset_env: frozenset[str] = frozenset()
    environment_key: str | None = None
    environment_built: bool = False

    def apply(self, env: Mapping[str, str]) -> dict[str, str]:
        result = {key: value for key, value in env.items() if key not in self.unset_env}
        result.update(self.set_env)
        if self.path_prefix:
            prefix = os.pathsep.join(str(path) for path in self.path_prefix)
            result["PATH"] = f"{prefix}{os.pathsep}{result['PATH']}" if result.get("PATH") else prefix
        return result


# A venv activation also drops these: they would point the venv's python elsewhere.
_DEACTIVATE = frozenset({"PYTHONHOME", "__PYVENV_LAUNCHER__", "CONDA_PREFIX"})


@contextlib.asynccontextmanager
async def prepare_command(
    kind: ExecutorKind, command: str, python_version: str | None, context: SetupContext
) -> AsyncIterator[PreparedCommand]:
    """Build or reuse the executor's environment and yield the command to run inside it.

    The environment stays leased (safe from `ame cache prune`) until the context exits, so keep
    the context open for as long as the command runs.
    """
    if kind == "custom":
        yield await _prepare_custom(command, python_version, context)
        return
    if kind == "mlflow":
        command = _with_local_env_manager(command) if command.strip() else _MLFLOW_RUN
    if not command.strip():
        raise SetupError(f"the {kind} executor has no command to run")
    argv = [_SHELL, "-c", command]
    recipe = await _recipe(kind, python_version, context)
    cache = EnvironmentCache(context.home.environments)
    async with cache.lease(recipe.key, recipe.build, description=recipe.description) as lease:
        venv = lease.path / "venv"
        yield PreparedCommand(
            argv=argv,
            path_prefix=[venv / "bin"],
            set_env={"VIRTUAL_ENV": str(venv)},
            unset_env=_DEACTIVATE,
            environment_key=recipe.key,
            environment_built=lease.built,
        )


_MLFLOW_RUN = "mlflow run . --env-manager local"
_MLFLOW_RUN_PREFIX = re.compile(r"^(\s*mlflow\s+run)(?=\s|$)")


def _with_local_env_manager(command: str) -> str:
    """`mlflow run ...` -> `mlflow run --env-manager local ...`: the task venv is the environment.

    MLflow's default manager would build its own virtualenv with pyenv for every run; AME already
    built (and cached) the environment, so MLflow must use the one it runs in.
    """
    if "--env-manager" in command:
        return command
    return _MLFLOW_RUN_PREFIX.sub(r"\1 --env-manager local", command, count=1)


@dataclass(frozen=True)
class _Recipe:
    key: str
    description: dict[str, str]
    build: Builder


async def _recipe(kind: ExecutorKind, python_version: str | None, context: SetupContext) -> _Recipe:
    project = context.project_dir
    extra: list[str] = []
    if kind == "pip":
        files = ["requirements.txt"]
        extra = extra_requirements(context.base_env)
    elif kind == "poetry":
        files = _require(project, kind, ["pyproject.toml", "poetry.lock"])
    elif kind == "pipenv":
        files = _require(project, kind, ["Pipfile", "Pipfile.lock"])
        python_version = python_version or _pipfile_python(project / "Pipfile")
    else:
        _require(project, kind, ["MLproject"])
        python_env = _mlflow_python_env(project)
        files = ["MLproject", "requirements.txt"]
        if python_env is not None:
            files.append(str(python_env.relative_to(project)))
            python_version = python_version or _python_env_version(python_env)
    interpreter = await find_interpreter(python_version, context.base_env)
    key = _key(kind, interpreter, project, files, extra)
    description = {
        "kind": kind,
        "python": interpreter.version,
        "project": str(project),
    }

    async def build(directory: Path) -> None:
        venv = directory / "venv"
        uv = str(uv_executable(context.base_env))
        seed = ["--seed"] if kind == "pipenv" else []
        await run_setup_step(
            context, [uv, "venv", "--quiet", *seed, "--python", str(interpreter.executable), str(venv)]
        )
        if kind == "pip":
            await _install_requirements(context, uv, venv)
            if extra:
                python = str(venv / "bin" / "python")
                await run_setup_step(context, [uv, "pip", "install", "--python", python, *extra])
        elif kind == "poetry":
            await _poetry_install(context, venv)
        elif kind == "pipenv":
            await _pipenv_sync(context, venv)
        else:
            await _mlflow_install(context, uv, venv, python_env)

    return _Recipe(key, description, build)


def _require(project: Path, kind: str, names: list[str]) -> list[str]:
    missing = [name for name in names if not (project / name).is_file()]
    if missing:
        raise SetupError(f"the {kind} executor needs {' and '.join(names)} in {project}; missing: {', '.join(missing)}")
    return names


def extra_requirements(env: Mapping[str, str]) -> list[str]:
    """Requirements a run names beside its requirements.txt (`AME_PIP_REQUIREMENTS`, one a line), e.g. a PEACH
    task's `dependencies`: part of the environment's cache key, installed after the file's."""
    return [line.strip() for line in env.get(PIP_REQUIREMENTS_ENV, "").splitlines() if line.strip()]


def _key(kind: str, interpreter: Interpreter, project: Path, files: list[str], extra: list[str] | None = None) -> str:
    digest = hashlib.sha256()
    inputs: dict[str, Any] = {
        "layout": _BUILD_LAYOUT,
        "kind": kind,
        "python": [interpreter.version, str(interpreter.executable)],
        "tools": {name: pin.requirement for name, pin in PINNED_TOOLS.items()},
        "mlflow": MLFLOW_REQUIREMENT if kind == "mlflow" else None,
    }
    if extra:
        inputs["extra"] = extra
    digest.update(json.dumps(inputs, sort_keys=True).encode())
    for name in sorted(files):
        path = project / name
        digest.update(f"\0{name}\0".encode())
        if path.is_file():
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        else:
            digest.update(b"<absent>")
    return f"{kind}-py{interpreter.version}-{digest.hexdigest()[:20]}"


def _venv_env(context: SetupContext, venv: Path) -> dict[str, str]:
    env = {key: value for key, value in context.base_env.items() if key not in _DEACTIVATE}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


async def _install_requirements(context: SetupContext, uv: str, venv: Path) -> None:
    requirements = context.project_dir / "requirements.txt"
    if not requirements.is_file() or not requirements.read_text().strip():
        return
    python = str(venv / "bin" / "python")
    await run_setup_step(context, [uv, "pip", "install", "--python", python, "-r", str(requirements)])


async def _poetry_install(context: SetupContext, venv: Path) -> None:
    env = _venv_env(context, venv)
    # Poetry installs into an activated venv (VIRTUAL_ENV) instead of creating its own; the
    # virtualenvs path is set anyway so a stray poetry venv lands in AME's cache, not ~/.cache.
    env["POETRY_VIRTUALENVS_PATH"] = str(context.home.environments / "poetry-virtualenvs")
    env["POETRY_NO_INTERACTION"] = "1"
    async with provision_tool("poetry", context) as poetry:
        await run_setup_step(context, [str(poetry), "install", "--no-root", "--no-interaction"], env=env)


async def _pipenv_sync(context: SetupContext, venv: Path) -> None:
    env = _venv_env(context, venv)
    env.pop("PIPENV_IGNORE_VIRTUALENVS", None)
    env.update(
        {
            "PIPENV_VENV_IN_PROJECT": "0",
            "WORKON_HOME": str(context.home.environments / "pipenv-workon"),
            "PIPENV_YES": "1",
            "PIPENV_NOSPIN": "1",
            "PIPENV_VERBOSITY": "-1",
        }
    )
    async with provision_tool("pipenv", context) as pipenv:
        await run_setup_step(context, [str(pipenv), "sync"], env=env)


async def _mlflow_install(context: SetupContext, uv: str, venv: Path, python_env: Path | None) -> None:
    requirements: list[str] = []
    if python_env is not None:
        spec = _load_yaml(python_env)
        for section in ("build_dependencies", "dependencies"):
            for item in spec.get(section) or []:
                # Entries may be pip options such as "-r requirements.txt".
                requirements.extend(shlex.split(str(item)) if str(item).startswith("-") else [str(item)])
    elif (context.project_dir / "requirements.txt").is_file():
        requirements.extend(["-r", "requirements.txt"])
    if not any(_is_mlflow(item) for item in requirements):
        requirements.append(MLFLOW_REQUIREMENT)
    python = str(venv / "bin" / "python")
    await run_setup_step(context, [uv, "pip", "install", "--python", python, *requirements])


def _is_mlflow(requirement: str) -> bool:
    return _MLFLOW_NAME.match(requirement.strip().lower().replace("_", "-")) is not None


_MLFLOW_NAME = re.compile(r"^mlflow(-skinny)?(?![a-z0-9-])")


async def _prepare_custom(command: str, python_version: str | None, context: SetupContext) -> PreparedCommand:
    if not command.strip():
        raise SetupError("the custom executor has no command to run")
    argv = [_SHELL, "-c", command]
    if python_version is None:
        return PreparedCommand(argv=argv, unset_env=frozenset({"VIRTUAL_ENV"}))
    interpreter = await find_interpreter(python_version, context.base_env)
    shims = _python_shims(context.home.pythons, interpreter)
    return PreparedCommand(argv=argv, path_prefix=[shims], unset_env=frozenset({"VIRTUAL_ENV"}) | _DEACTIVATE)


def _python_shims(root: Path, interpreter: Interpreter) -> Path:
    """A bin directory whose python/python3/pythonX.Y are the requested interpreter."""
    minor = ".".join(interpreter.version.split(".")[:2])
    digest = hashlib.sha256(str(interpreter.executable).encode()).hexdigest()[:12]
    directory = root / f"{interpreter.version}-{digest}" / "bin"
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("python", "python3", f"python{minor}"):
        link = directory / name
        if link.is_symlink() and Path(os.readlink(link)) == interpreter.executable:
            continue
        # Symlink then rename: concurrent runs may create the same shim.
        staging = directory / f".{name}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        os.symlink(interpreter.executable, staging)
        os.replace(staging, link)
    return directory


def _pipfile_python(pipfile: Path) -> str | None:
    import tomllib

    try:
        data = tomllib.loads(pipfile.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SetupError(f"cannot read {pipfile}: {exc}") from exc
    requires = data.get("requires") or {}
    version = requires.get("python_version") or requires.get("python_full_version")
    return str(version) if version else None


def _mlflow_python_env(project: Path) -> Path | None:
    spec = _load_yaml(project / "MLproject")
    name = spec.get("python_env")
    if name:
        path = project / str(name)
        if not path.is_file():
            raise SetupError(f"MLproject names python_env {name!r}, which does not exist in {project}")
        return path
    default = project / "python_env.yaml"
    return default if default.is_file() else None


def _python_env_version(python_env: Path) -> str | None:
    version = _load_yaml(python_env).get("python")
    if not version:
        return None
    # python_env.yaml pins a full version for pyenv; any patch release of that minor will do here.
    return ".".join(str(version).split(".")[:2])


def _load_yaml(path: Path) -> dict[str, Any]:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        data = YAML(typ="safe").load(path.read_text())
    except (OSError, YAMLError) as exc:
        raise SetupError(f"cannot read {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SetupError(f"{path} should contain a mapping")
    return data
