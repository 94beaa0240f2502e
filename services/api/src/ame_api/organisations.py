"""Which organisation a request acts for: always the caller's own (from its token)."""

from __future__ import annotations

from ame.domain.principals import Principal
from ame_api.repositories.runs import NotFound


def resolve(principal: Principal, organisation: str | None) -> str:
    """The caller's organisation. A request that names another one (gRPC requests carry an optional
    `organisation`) gets NotFound, exactly as for an organisation that does not exist."""
    if organisation and organisation != principal.organisation:
        raise NotFound(f"organisation {organisation[:200]!r} not found")
    return principal.organisation
