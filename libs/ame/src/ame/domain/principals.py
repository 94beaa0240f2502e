"""Who a request acts for: the principal every front door derives from the caller's token, carried down to the
repositories so that each query is scoped by its organisation.

Scopes are ordered: `read` < `run` < `admin` < `server-admin`. A token of an organisation holds one of the first
three; a server-admin token manages organisations and acts, for everything else, in its own organisation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

TOKEN_PREFIX = "ame_"
# Organisation names appear in object-store keys and in webhook paths: kept to a safe alphabet.
ORGANISATION_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_ORGANISATION = re.compile(ORGANISATION_NAME)


class Scope(StrEnum):
    READ = "read"
    RUN = "run"
    ADMIN = "admin"
    SERVER_ADMIN = "server-admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def covers(self, needed: Scope) -> bool:
        """Whether a holder of this scope may do what `needed` guards."""
        return self.rank >= needed.rank


_RANKS = {Scope.READ: 1, Scope.RUN: 2, Scope.ADMIN: 3, Scope.SERVER_ADMIN: 4}


class PrincipalKind(StrEnum):
    TOKEN = "token"  # an API token (any scope, server-admin included)
    TRIGGER = "trigger"  # AME itself: a schedule's slot, a pipeline step
    RUN = "run"  # a short-lived token scoped to one run (a browser following its logs)


@dataclass(frozen=True)
class Principal:
    organisation: str
    scope: Scope
    kind: PrincipalKind = PrincipalKind.TOKEN
    # The token's id (TOKEN), the trigger's name (TRIGGER) or the run's id (RUN).
    subject: str = ""

    def allows(self, needed: Scope) -> bool:
        return self.scope.covers(needed)

    @property
    def started_by(self) -> str:
        """What a run records about who started it: `token:<id>` or `trigger:<name>`."""
        return f"{self.kind.value}:{self.subject}"

    @classmethod
    def trigger(cls, organisation: str, name: str) -> Principal:
        return cls(organisation=organisation, scope=Scope.RUN, kind=PrincipalKind.TRIGGER, subject=name)


def check_organisation_name(name: str) -> str:
    if not _ORGANISATION.match(name):
        raise ValueError(
            f"organisation name {name[:80]!r} must be 1-63 lowercase letters, digits, '_' or '-', starting with a "
            "letter or digit"
        )
    return name
