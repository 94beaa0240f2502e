"""Where AME keeps its local state: environments, tools, secrets, artifacts and run records."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AmeHome"]


@dataclass(frozen=True)
class AmeHome:
    """The AME home directory (`AME_HOME`, default `~/.ame`) and the layout beneath it."""

    root: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AmeHome:
        env = os.environ if environ is None else environ
        configured = env.get("AME_HOME")
        root = Path(configured).expanduser() if configured else Path.home() / ".ame"
        return cls(root.absolute())

    @property
    def environments(self) -> Path:
        return self.root / "envs"

    @property
    def tools(self) -> Path:
        return self.root / "tools"

    @property
    def pythons(self) -> Path:
        return self.root / "pythons"

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.json"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def gpu_locks(self) -> Path:
        """One lock file per GPU, shared by every `ame task run -l` of this home (see ame.runner.gpus)."""
        return self.root / "gpus"

    @property
    def task_args(self) -> Path:
        """One file per run in progress holding its task arguments (AME_TASK_ARGS_FILE), removed when it ends."""
        return self.root / "task-args"
