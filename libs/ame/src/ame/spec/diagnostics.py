"""Turn pydantic validation errors into problems people can act on.

pydantic knows *what* is wrong and the path to it (``('tasks', 'train', 'resources',
'memory')``); the located tree knows *where* that path is in the file. This module joins
the two and rewrites pydantic's generic wording ("Extra inputs are not permitted") into
the words of the AME docs, with a suggestion where one can be made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ame.spec.errors import Problem
from ame.spec.suggestions import closest
from ame.spec.yaml_tree import LocDict, LocList, Mark

# Keys people reach for that difflib cannot connect to the right one.
_KEY_HINTS = {
    "gpu": "nvidia.com/gpu",
    "gpus": "nvidia.com/gpu",
    "nvidia.com/gpus": "nvidia.com/gpu",
    "ram": "memory",
    "mem": "memory",
    "disk": "storage",
    "cpus": "cpu",
    "env": "environment",
    "variables": "environment",
    "image": "executor: image",
    "cmd": "executor: command",
    "command": "executor: command",
    "pythonVersion": "executor: pythonVersion",
    "schedule": "triggers: schedule",
    "cron": "triggers: schedule",
    "template": "fromTemplate",
    "extends": "fromTemplate",
    "task": "taskRef",
    "ref": "taskRef",
    "steps": "pipeline",
    "depends_on": "pipeline",
    "artifact": "artifacts",
    "datasets": "dataSets",
    "data_sets": "dataSets",
    "timeout_seconds": "timeout",
    "retry": "retries",
    "queue": "loop",
    "value": "val",
}
_TASK_KEYS = frozenset(
    {
        "executor",
        "resources",
        "environment",
        "secrets",
        "artifacts",
        "triggers",
        "timeout",
        "retries",
        "loop",
        "fromTemplate",
        "taskRef",
        "pipeline",
    }
)
_KIND_NAMES: dict[type, str] = {
    dict: "a mapping",
    list: "a list",
    str: "text",
    type(None): "nothing (an empty value)",
}


def problems_from_validation(error: ValidationError, tree: Any, filename: str) -> list[Problem]:
    """One problem per pydantic error, positioned by walking ``tree`` along the error's path."""
    problems = []
    for detail in error.errors(include_url=False):
        mark, path, parent, last = _locate(tree, detail["loc"], detail["type"])
        message = _message(detail, parent, last)
        shown = ".".join(path)
        problems.append(Problem(filename, mark[0], mark[1], f"{shown}: {message}" if shown else message))
    return problems


def _locate(tree: Any, loc: Sequence[int | str], error_type: str) -> tuple[Mark, list[str], Any, Any]:
    """Follow ``loc`` through the located tree.

    Returns the deepest known position, the readable path, the last container reached and
    the last path element. Path elements that are not in the tree (discriminator tags,
    union member names, missing keys) are skipped.
    """
    node = tree
    mark: Mark = tree.mark if isinstance(tree, LocDict | LocList) else (1, 1)
    path: list[str] = []
    parent: Any = tree
    last: Any = None
    for index, part in enumerate(loc):
        parent, last = node, part
        if isinstance(node, LocDict) and isinstance(part, str) and part in node:
            is_last = index == len(loc) - 1
            # An unknown key is best shown at the key itself, everything else at its value.
            mark = node.key_mark(part) if is_last and error_type == "extra_forbidden" else node.value_mark(part)
            path.append(part)
            node = node[part]
        elif isinstance(node, LocList) and isinstance(part, int) and 0 <= part < len(node):
            mark = node.item_mark(part)
            if not node.synthetic:
                item = node[part]
                label = item.get("name") if isinstance(item, LocDict) else None
                suffix = f"[{label}]" if isinstance(label, str) else f"[{part}]"
                if path:
                    path[-1] += suffix
                else:
                    path.append(suffix)
            node = node[part]
        elif index == len(loc) - 1 and isinstance(node, LocDict) and error_type == "missing":
            path.append(str(part))
    return mark, path, parent, last


def _message(detail: ErrorDetails, parent: Any, last: Any) -> str:
    error_type = detail["type"]
    value = detail.get("input")
    context = detail.get("ctx") or {}
    if error_type == "extra_forbidden":
        return _unknown_key(str(last), parent)
    if error_type == "missing":
        return f"missing required field '{last}'"
    if error_type in ("value_error", "assertion_error"):
        return str(context.get("error", detail["msg"]))
    if error_type == "string_type":
        if value is None:
            return 'needs a value (write "" for empty text)'
        return f"expected text, got {_kind(value)}"
    if error_type in ("list_type", "tuple_type"):
        return f"expected a list (lines starting with '- '), got {_kind(value)}"
    if error_type in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping of 'key: value' lines, got {_kind(value)}"
    if error_type in ("int_parsing", "int_type", "int_from_float"):
        return f"expected a whole number, got {_show(value)}"
    if error_type in ("bool_parsing", "bool_type"):
        return f"expected true or false, got {_show(value)}"
    if error_type in ("float_parsing", "float_type"):
        return f"expected a number, got {_show(value)}"
    if error_type in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return f"{_show(value)} is out of range: {detail['msg'].lower()}"
    if error_type == "literal_error":
        return f"{_show(value)} is not allowed: {detail['msg'].lower()}"
    return str(detail["msg"])


def _unknown_key(key: str, parent: Any) -> str:
    schema = parent.schema if isinstance(parent, LocDict) else None
    known: list[str] = []
    if schema is not None and hasattr(schema, "yaml_keys"):
        known = [name for name in schema.yaml_keys() if name != "kind"]
    message = f"unknown field '{key}'"
    schema_name = getattr(schema, "__name__", "")
    if schema_name == "Project" and key in _TASK_KEYS:
        return f"{message}: '{key}' belongs to a task; indent it under the task's '- name: ...' line in 'tasks:'"
    hint = _KEY_HINTS.get(key)
    if hint is not None and hint.split(":")[0] in [*known, "executor"] and hint != key:
        if hint.startswith("executor: ") and "executor" in known:
            return f"{message}; '{key}' goes inside the executor ({hint})"
        if hint in known:
            return f"{message}; did you mean '{hint}'?"
    suggestion = closest(key, known)
    if suggestion is not None and suggestion != key:
        return f"{message}; did you mean '{suggestion}'?"
    if known:
        return f"{message}; expected one of: {', '.join(known)}"
    return message


def _kind(value: Any) -> str:
    for kind, name in _KIND_NAMES.items():
        if isinstance(value, kind):
            return name if kind is not str else f"text {value!r}"
    return type(value).__name__


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else _kind(value)
