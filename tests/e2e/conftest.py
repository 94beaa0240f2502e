"""`ame server` as a fixture: a fresh AME home per test, the server killed if a test leaves it running."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_ame_server import Server


@pytest.fixture
def ame_server(tmp_path: Path) -> Iterator[Server]:
    """A Server not yet started (call .start()); its home is a 0o755 directory, as PostgreSQL needs."""
    s = Server(tmp_path / "home")
    s.home.mkdir()
    yield s
    if s.proc is not None and s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()
