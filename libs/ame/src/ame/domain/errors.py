"""Turning validation errors into one readable sentence for people (CLI, REST, gRPC)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from ame.domain.limits import printable


def where(loc: Sequence[int | str]) -> str:
    # A location may hold a client's dict key; escaped, so the error itself can always be sent back.
    parts = [printable(str(p)) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "request"


def problems(errors: Sequence[Any]) -> list[dict[str, str]]:
    """`field`/`message` pairs from pydantic's error list, without its boilerplate."""
    found = []
    for error in errors:
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        found.append({"field": where(tuple(error.get("loc", ()))), "message": printable(message)})
    return found


def describe(exc: ValidationError) -> str:
    return "; ".join(f"{p['field']}: {p['message']}" for p in problems(exc.errors()))
