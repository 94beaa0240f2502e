"""Shared helpers for the spec tests: fixture paths and error assertions."""

from __future__ import annotations

from pathlib import Path

import pytest

from ame.spec import Problem, SpecError, load_project_text

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


def problems_of(text: str) -> list[Problem]:
    """Every problem ``text`` produces; fails the test if it loads cleanly."""
    with pytest.raises(SpecError) as caught:
        load_project_text(text)
    return caught.value.problems


def only_problem(text: str) -> Problem:
    problems = problems_of(text)
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]
