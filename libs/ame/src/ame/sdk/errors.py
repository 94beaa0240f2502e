"""Errors the SDK raises, one per thing a caller can act on."""

from __future__ import annotations


class AmeError(Exception):
    """An AME server refused or failed a call; `str()` is the server's message."""


class NotFound(AmeError):
    pass


class InvalidArgument(AmeError):
    pass


class Conflict(AmeError):
    """The request contradicts the server's state (e.g. a commit before its blobs are uploaded)."""


class MissingBlobs(Conflict):
    """A version was committed before all its blobs were uploaded."""


class Unauthenticated(AmeError):
    """No token was sent, or the server does not accept it (unknown, expired or revoked)."""


class PermissionDenied(AmeError):
    """The token lacks the scope the call needs."""


class Unavailable(AmeError):
    """The server cannot be reached."""


class PackagingFailed(AmeError):
    """An orchestration's environment could not be built; `str()` names the requirement and why."""
