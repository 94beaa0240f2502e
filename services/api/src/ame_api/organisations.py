"""Which organisation a request acts for. Tokens will choose it; until then only the server's own exists."""

from __future__ import annotations

from ame_api.repositories.runs import NotFound
from ame_api.settings import ApiSettings


def resolve(settings: ApiSettings, organisation: str | None) -> str:
    """The organisation named (empty or None: the server's own); NotFound for any other."""
    if organisation and organisation != settings.organisation:
        raise NotFound(f"organisation {organisation[:200]!r} not found")
    return settings.organisation
