"""Finding interpreters for pythonVersion."""

from __future__ import annotations

import sys

import pytest

from ame.runner.interpreters import InterpreterNotFoundError, find_interpreter, version_matches


def test_version_matching() -> None:
    assert version_matches("3.11", "3.11.7")
    assert version_matches("3", "3.12.1")
    assert not version_matches("3.1", "3.11.7")
    assert not version_matches("3.11.4", "3.11.7")


async def test_the_running_interpreter_needs_no_probe() -> None:
    current = f"{sys.version_info[0]}.{sys.version_info[1]}"
    found = await find_interpreter(current)
    assert found.version.startswith(current + ".")
    assert (await find_interpreter(None)).version == found.version


async def test_unknown_version_lists_what_exists() -> None:
    with pytest.raises(InterpreterNotFoundError) as raised:
        await find_interpreter("3.99")
    message = str(raised.value)
    assert "no Python 3.99 found" in message
    assert f"{sys.version_info[0]}.{sys.version_info[1]}." in message


async def test_rejects_what_is_not_a_version() -> None:
    with pytest.raises(InterpreterNotFoundError, match="not a version"):
        await find_interpreter("latest")
