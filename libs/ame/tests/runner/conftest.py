"""Fixtures for the local runner: an isolated AME home and small projects written to tmp dirs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ame.runner.home import AmeHome

from .support import ProjectFactory


@pytest.fixture
def ame_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AmeHome:
    root = tmp_path / "ame-home"
    monkeypatch.setenv("AME_HOME", str(root))
    return AmeHome(root)


@pytest.fixture
def make_project(tmp_path: Path) -> ProjectFactory:
    """Write ame.yml (dedented) and any other files into a fresh project directory."""
    counter = iter(range(1000))

    def make(ame_yml: str, files: dict[str, str] | None = None) -> Path:
        project = tmp_path / f"project{next(counter)}"
        project.mkdir()
        (project / "ame.yml").write_text(textwrap.dedent(ame_yml))
        for name, content in (files or {}).items():
            path = project / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(content))
        return project

    return make
