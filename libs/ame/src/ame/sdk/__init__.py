"""The Python SDK: talk to an AME server over gRPC."""

from ame.sdk.client import Client
from ame.sdk.errors import (
    AmeError,
    Conflict,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "AmeError",
    "Client",
    "Conflict",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "Unauthenticated",
    "Unavailable",
]
