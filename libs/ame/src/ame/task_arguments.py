"""What a task's own code calls: `ame.task_args()` (the arguments its run was started with) and `ame.in_task()`.

Every run AME starts (`ame task run -l`, a launcher, a webhook) has AME_IN_TASK=1 and AME_TASK_ARGS_FILE naming a
file that holds the arguments as JSON (`null` for none); AME_TASK_ARGS holds the same text when it is small. The
file is read first, so that a payload too big for the environment reads the same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import JsonValue

__all__ = ["in_task", "task_args"]


def in_task(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process is a run AME started."""
    return (os.environ if environ is None else environ).get("AME_IN_TASK") == "1"


def task_args(environ: Mapping[str, str] | None = None) -> JsonValue:
    """The run's task arguments (a webhook's JSON payload, `--args`), or None when it has none or is not a run.

    Raises ValueError if the arguments are not JSON (they always are when AME wrote them).
    """
    env = os.environ if environ is None else environ
    path = env.get("AME_TASK_ARGS_FILE")
    if path:
        with open(path, encoding="ascii") as source:
            text = source.read()
    else:
        text = env.get("AME_TASK_ARGS", "")
    # Plain json (not ame.domain): `import ame` in a task must stay cheap.
    value: JsonValue = json.loads(text) if text else None
    return value
