"""The command-line tools executors need (uv, poetry, pipenv), provisioned at pinned versions.

A tool already on PATH is used as is. Otherwise AME installs the pinned version with uv into its
own venv under `<AME_HOME>/tools/<tool>-<version>`, through the same cache as task environments,
so concurrent first runs install it once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ame.runner.env_cache import EnvironmentCache
from ame.runner.setup_steps import SetupContext, run_setup_step

__all__ = ["PINNED_TOOLS", "ToolPin", "provision_tool", "uv_executable"]


@dataclass(frozen=True)
class ToolPin:
    name: str
    requirement: str
    version: str


PINNED_TOOLS: Mapping[str, ToolPin] = {
    "poetry": ToolPin("poetry", "poetry==2.1.3", "2.1.3"),
    "pipenv": ToolPin("pipenv", "pipenv==2025.0.4", "2025.0.4"),
}


def uv_executable(environ: Mapping[str, str] | None = None) -> Path:
    """uv from PATH, else the binary shipped in the `uv` wheel AME depends on."""
    env = os.environ if environ is None else environ
    found = shutil.which("uv", path=env.get("PATH"))
    if found:
        return Path(found)
    from uv import find_uv_bin

    return Path(find_uv_bin())


@contextlib.asynccontextmanager
async def provision_tool(name: str, context: SetupContext) -> AsyncIterator[Path]:
    """Yield the path of the tool's executable, installing the pinned version if it is not on PATH."""
    on_path = shutil.which(name, path=context.base_env.get("PATH"))
    if on_path:
        yield Path(on_path)
        return
    pin = PINNED_TOOLS[name]
    cache = EnvironmentCache(context.home.tools)

    async def build(directory: Path) -> None:
        uv = str(uv_executable(context.base_env))
        venv = directory / "venv"
        # The tool runs on the interpreter running AME: it only has to drive the task's env.
        python = _ame_python()
        await run_setup_step(context, [uv, "venv", "--quiet", "--python", python, str(venv)])
        await run_setup_step(
            context,
            [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), pin.requirement],
        )

    description = {"kind": "tool", "tool": name, "version": pin.version}
    async with cache.lease(f"{name}-{pin.version}", build, description=description) as lease:
        yield lease.path / "venv" / "bin" / name


def _ame_python() -> str:
    return str(Path(sys.executable).resolve())
