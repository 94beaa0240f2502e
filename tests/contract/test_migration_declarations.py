"""Every migration written since rolling deploys exist says whether old code can run against it.

Without a `-- ame:` line a migration counts as breaking, so an old replica restarted during a rollout refuses the
database; a forgotten line would turn an additive change into downtime. Older files predate the rule.
"""

from __future__ import annotations

import re

import pytest

from ame_platform.db.migrations import load

# The first migration of the rolling-deploy rule (docs/migrations.md); every later one declares itself.
RULE_SINCE = "20261202040000"
SERVICES = ["ame_api", "ame_scheduler", "ame_launcher", "ame_logs"]


@pytest.mark.parametrize("package", SERVICES)
def test_every_migration_since_the_rule_declares_its_compatibility(package: str) -> None:
    undeclared = [
        f"{m.version}_{m.name}"
        for m in load(package)
        if m.version >= RULE_SINCE and not re.search(r"^-- ame: ", m.sql, flags=re.MULTILINE)
    ]
    assert undeclared == [], f"add `-- ame: compatible` (or requires/breaking) to: {undeclared}"


def test_the_rule_applies_to_some_migrations() -> None:
    # Guards the test above against a threshold that selects nothing.
    assert any(m.version >= RULE_SINCE for package in SERVICES for m in load(package))
