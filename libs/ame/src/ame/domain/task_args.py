"""Task arguments as they travel: one JSON encoding everywhere (the bus, the file a run reads, its environment).

ASCII-only, so the text is valid in any environment and file encoding whatever the payload holds (a lone
surrogate in a JSON string included), and compact, so the size limits count what is really carried.
"""

from __future__ import annotations

import json

from pydantic import JsonValue

__all__ = ["decode_task_args", "encode_task_args"]


def encode_task_args(value: JsonValue) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def decode_task_args(text: str | bytes) -> JsonValue:
    """The value of `text` ('' means none); raises ValueError for anything that is not strict JSON (NaN and
    Infinity included) or nests too deeply to read."""
    if not text.strip():
        return None
    try:
        value: JsonValue = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("the JSON nests too deeply") from None
    return value
