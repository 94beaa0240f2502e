"""Strict decoding of gRPC requests: what "refuse unknown fields" means for protobuf.

protobuf keeps fields it does not know as "unknown fields" and carries on, which is right on the bus (two
versions side by side) and wrong at the front door: a client that sets a field this server does not have
would believe it was honoured. So the api refuses, with INVALID_ARGUMENT naming where, any request that

* does not decode (truncated bytes, a string that is not UTF-8), which grpc would otherwise report as
  UNKNOWN, or
* carries a field number its message does not define, at any depth (`spec.resources`, a repeated entry).

Enum values outside the defined set stay in their field (proto3 enums are open); `convert` refuses them
where they are read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Refused:
    """A request that is answered INVALID_ARGUMENT before any handler sees it."""

    message: str


def strict_parser(cls: type[M]) -> Callable[[bytes], M | Refused]:
    """A request deserializer for `cls` that never raises: it returns the message or why it was refused."""

    def parse(data: bytes) -> M | Refused:
        message = cls()
        try:
            message.ParseFromString(data)
        except Exception as exc:  # DecodeError, or RuntimeError/ValueError from some protobuf backends
            return Refused(f"the request is not a valid {cls.DESCRIPTOR.name}: {exc}")
        unknown = first_unknown_field(message)
        if unknown is not None:
            where, number = unknown
            return Refused(
                f"{where}: unknown field number {number}; this server does not define it "
                "(a newer client? fields it does not know are refused, not ignored)"
            )
        return message

    return parse


def first_unknown_field(message: Message, where: str = "request") -> tuple[str, int] | None:
    """Where the first unknown field is (a dotted path) and its number, or None when there is none."""
    unknown = UnknownFieldSet(message)
    if len(unknown):
        return where, int(unknown[0].field_number)
    for path, child in _children(message, where):
        found = first_unknown_field(child, path)
        if found is not None:
            return found
    return None


def _children(message: Message, where: str) -> Iterator[tuple[str, Message]]:
    prefix = "" if where == "request" else f"{where}."
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        name = f"{prefix}{field.name}"
        kind = field.message_type
        if kind is not None and kind.GetOptions().map_entry:
            if kind.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                for key, item in value.items():
                    yield f"{name}[{key!r}]", item
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield f"{name}[{index}]", item
        else:
            yield name, value
