"""The credential a launcher presents to resolve a run's secrets: one shared token, compared in constant time.

Kept in this one module so that a token scope can take its place without touching the callers.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from pydantic import SecretStr

SCHEME = "bearer "


class NotALauncher(PermissionError):
    """The call did not carry the launcher credential."""


def check(expected: SecretStr | None, metadata: Iterable[tuple[str, str | bytes]]) -> None:
    """Raise NotALauncher unless `metadata` holds `authorization: Bearer <expected>`."""
    if expected is None or not expected.get_secret_value():
        raise NotALauncher("this server has no launcher credential configured (AME_SECRETS_LAUNCHER_TOKEN)")
    presented = ""
    for key, value in metadata:
        if key.lower() == "authorization" and isinstance(value, str) and value.lower().startswith(SCHEME):
            presented = value[len(SCHEME) :]
    if not hmac.compare_digest(presented.encode(), expected.get_secret_value().encode()):
        raise NotALauncher("resolving a run's secrets needs the launcher credential")
