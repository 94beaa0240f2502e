"""PEACH task loops (seed 002): notebook tasks, and their information view (`initialize_tasks_info()`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ame.peach.history import TasksInfo


def initialize_tasks_info(organisation: str | None = None, task: str | None = None, **kwargs: Any) -> TasksInfo:
    """See `ame.peach.history.initialize_tasks_info` (imported on first use: it needs httpx and matplotlib)."""
    from ame.peach.history import initialize_tasks_info as view

    return view(organisation, task, **kwargs)


__all__ = ["initialize_tasks_info"]
