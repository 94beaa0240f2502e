"""AME: declare machine-learning work in ame.yml and run it locally or on the AME control plane."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ame.peach import initialize_tasks_info
from ame.task_arguments import in_task, task_args

if TYPE_CHECKING:
    from ame.sdk.orchestrations import Client

__version__ = "0.1.0"

__all__ = ["Client", "__version__", "in_task", "initialize_tasks_info", "task_args"]


def __getattr__(name: str) -> Any:
    # `ame.Client` (seed 004) loads the gRPC SDK on first use, so `import ame` in a task stays cheap.
    if name == "Client":
        from ame.sdk.orchestrations import Client

        return Client
    raise AttributeError(f"module 'ame' has no attribute {name!r}")
