"""Find a Python interpreter matching a task's `pythonVersion`, without downloading one.

Search order: the interpreter running AME (free: no subprocess), pyenv's versions directory,
`pythonX.Y` on PATH, then `uv python find` with downloads disabled. Each candidate is asked for its
real version and executable, because PATH entries are often pyenv shims (bash scripts that pick a
version at run time) and a venv must point at the real interpreter.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ame.runner.process import ProcessSpec, capture_process
from ame.runner.tools import uv_executable

__all__ = ["Interpreter", "InterpreterNotFoundError", "find_interpreter", "version_matches"]

_VERSION_RE = re.compile(r"^\d+(\.\d+){0,2}$")
_PROBE = "import sys; print('%d.%d.%d' % sys.version_info[:3]); print(sys.executable)"
_PROBE_TIMEOUT = 30.0


class InterpreterNotFoundError(Exception):
    """No interpreter matches the requested version; the message lists the ones found."""


@dataclass(frozen=True)
class Interpreter:
    """A concrete interpreter: its full version ("3.11.9") and real executable path."""

    version: str
    executable: Path


def version_matches(requested: str, actual: str) -> bool:
    """`3.11` matches `3.11.9`; `3.11.4` matches only itself; `3` matches any 3.x."""
    want = requested.split(".")
    have = actual.split(".")
    return have[: len(want)] == want


async def find_interpreter(requested: str | None, environ: Mapping[str, str] | None = None) -> Interpreter:
    """Return an interpreter for `requested` (None: the one running AME) or raise with the choices."""
    env = dict(os.environ if environ is None else environ)
    current = _current_interpreter()
    if requested is None:
        return current
    requested = requested.strip()
    if not _VERSION_RE.match(requested):
        raise InterpreterNotFoundError(f"pythonVersion {requested!r} is not a version like 3.11 or 3.11.4")
    if version_matches(requested, current.version):
        return current

    for candidate in _candidates(requested, env):
        found = await _probe(candidate, env)
        if found is not None and version_matches(requested, found.version):
            return found
    found = await _uv_python_find(requested, env)
    if found is not None and version_matches(requested, found.version):
        return found

    available = sorted(await _available_versions(env), key=_version_key)
    listing = ", ".join(available) if available else "none"
    raise InterpreterNotFoundError(
        f"no Python {requested} found (looked at python{_minor(requested)} on PATH, pyenv versions and "
        f"`uv python find`); available: {listing}. Install it, e.g. `pyenv install {requested}` or "
        f"`uv python install {requested}`."
    )


def _current_interpreter() -> Interpreter:
    version = ".".join(str(part) for part in sys.version_info[:3])
    # sys.executable may be a venv's python; its symlink target is the base interpreter.
    return Interpreter(version, Path(sys.executable).resolve())


def _minor(requested: str) -> str:
    return ".".join(requested.split(".")[:2])


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _pyenv_root(env: Mapping[str, str]) -> Path:
    return Path(env.get("PYENV_ROOT") or Path.home() / ".pyenv")


def _candidates(requested: str, env: Mapping[str, str]) -> list[Path]:
    minor = _minor(requested)
    candidates: list[Path] = []
    # pyenv's real binaries first: PATH often holds only pyenv shims, which fail for any version
    # that is not pyenv's global one and cost a bash start-up each.
    versions = _pyenv_root(env) / "versions"
    if versions.is_dir():
        names = [p.name for p in versions.iterdir() if version_matches(requested, p.name)]
        for name in sorted(names, key=_version_key, reverse=True):
            path = versions / name / "bin" / f"python{minor}"
            if os.access(path, os.X_OK):
                candidates.append(path)
    for directory in env.get("PATH", "").split(os.pathsep):
        if directory:
            path = Path(directory) / f"python{minor}"
            if os.access(path, os.X_OK):
                candidates.append(path)
    return candidates


async def _probe(executable: Path, env: Mapping[str, str]) -> Interpreter | None:
    spec = ProcessSpec(argv=[str(executable), "-c", _PROBE], cwd=Path.cwd(), env=env, timeout_seconds=_PROBE_TIMEOUT)
    captured = await capture_process(spec)
    if captured.outcome.state != "succeeded" or len(captured.stdout) < 2:
        return None
    return Interpreter(captured.stdout[0].strip(), Path(captured.stdout[1].strip()))


async def _uv_python_find(requested: str, env: Mapping[str, str]) -> Interpreter | None:
    argv = [str(uv_executable(env)), "python", "find", "--no-project", requested]
    spec = ProcessSpec(
        argv=argv,
        cwd=Path.cwd(),
        env={**env, "UV_PYTHON_DOWNLOADS": "never"},
        timeout_seconds=_PROBE_TIMEOUT,
    )
    captured = await capture_process(spec)
    if captured.outcome.state != "succeeded" or not captured.stdout:
        return None
    return await _probe(Path(captured.stdout[0].strip()), env)


def _pythons_on_path(env: Mapping[str, str]) -> list[Path]:
    found: list[Path] = []
    for directory in env.get("PATH", "").split(os.pathsep):
        if not directory or not Path(directory).is_dir():
            continue
        for path in sorted(Path(directory).glob("python3.*")):
            # pyenv shims are covered by listing pyenv's versions directory, and each costs a bash start.
            if "shims" in path.parts:
                continue
            if re.fullmatch(r"python3\.\d+", path.name) and path not in found:
                found.append(path)
    return found


async def _available_versions(env: Mapping[str, str]) -> set[str]:
    """Versions we could offer instead, for the error message only (so it may be slow)."""
    versions: set[str] = {_current_interpreter().version}
    pyenv_versions = _pyenv_root(env) / "versions"
    if pyenv_versions.is_dir():
        versions.update(p.name for p in pyenv_versions.iterdir() if _VERSION_RE.match(p.name))
    for path in _pythons_on_path(env):
        found = await _probe(path, env)
        if found is not None:
            versions.add(found.version)
    spec = ProcessSpec(
        argv=[str(uv_executable(env)), "python", "list", "--only-installed"],
        cwd=Path.cwd(),
        env={**env, "UV_PYTHON_DOWNLOADS": "never"},
        timeout_seconds=_PROBE_TIMEOUT,
    )
    captured = await capture_process(spec)
    for line in captured.stdout:
        match = re.match(r"^c?python-(\d+\.\d+\.\d+)", line.strip())
        if match:
            versions.add(match.group(1))
    return versions
