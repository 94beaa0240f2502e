"""Request fields checked with the same limits as the REST schemas (ame.domain.limits), for every area."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from ame.codecs import DecodeError
from ame.domain import errors
from ame.domain.limits import NameFilter, RunIdText

_T = TypeVar("_T")

RUN_ID: TypeAdapter[str] = TypeAdapter(RunIdText)
NAME_FILTER: TypeAdapter[str] = TypeAdapter(NameFilter)


def checked(adapter: TypeAdapter[_T], value: Any, field: str) -> _T:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise DecodeError("; ".join(f"{field}: {p['message']}" for p in errors.problems(exc.errors()))) from None
