"""EnvironmentCache: build once under concurrency, crash safety, new key for new inputs, prune."""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from pathlib import Path

import pytest

from ame.runner import env_cache
from ame.runner.env_cache import EnvironmentCache


async def test_concurrent_leases_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = EnvironmentCache(tmp_path / "cache")
    builds = 0
    gate = asyncio.Event()
    contended = asyncio.Event()
    real_flock = env_cache._flock

    async def observed_flock(fd: int, operation: int) -> None:
        # Notice the moment one lease has to wait for the other's lock, then lock as usual.
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            contended.set()
            await real_flock(fd, operation)

    monkeypatch.setattr(env_cache, "_flock", observed_flock)

    async def build(directory: Path) -> None:
        nonlocal builds
        builds += 1
        await gate.wait()
        (directory / "marker").write_text("built")

    async def use() -> Path:
        async with cache.lease("env-a", build) as lease:
            return lease.path

    first = asyncio.create_task(use())
    second = asyncio.create_task(use())
    # Finish the build only once the other lease is waiting on the lock, so both really race for it.
    await asyncio.wait_for(contended.wait(), timeout=10)
    gate.set()
    paths = await asyncio.gather(first, second)
    assert builds == 1
    assert paths[0] == paths[1]
    assert (paths[0] / "marker").read_text() == "built"


async def test_failed_build_publishes_nothing_and_next_lease_rebuilds(tmp_path: Path) -> None:
    cache = EnvironmentCache(tmp_path / "cache")

    async def broken(directory: Path) -> None:
        (directory / "half").write_text("x")
        raise RuntimeError("install failed")

    with pytest.raises(RuntimeError):
        async with cache.lease("env-b", broken):
            pass
    assert cache.find("env-b") is None
    assert list((tmp_path / "cache" / "store").iterdir()) == []

    async def good(directory: Path) -> None:
        (directory / "ok").write_text("x")

    async with cache.lease("env-b", good) as lease:
        assert lease.built
    async with cache.lease("env-b", good) as again:
        assert not again.built
        assert again.path == lease.path


async def test_prune_keeps_entries_in_use_and_recent_ones(tmp_path: Path) -> None:
    cache = EnvironmentCache(tmp_path / "cache")

    async def build(directory: Path) -> None:
        (directory / "f").write_text("x" * 100)

    for key in ("old", "recent", "busy"):
        async with cache.lease(key, build):
            pass
    long_ago = time.time() - 40 * 86400
    for key in ("old", "busy"):
        path = cache.find(key)
        assert path is not None
        os.utime(path / "ame-env.json", (long_ago, long_ago))

    async with cache.lease("busy", build):
        # `busy` was touched by this lease; age it again while it is held.
        busy = cache.find("busy")
        assert busy is not None
        os.utime(busy / "ame-env.json", (long_ago, long_ago))
        removed = cache.prune(unused_for_seconds=30 * 86400)
    assert [entry.key for entry in removed] == ["old"]
    assert sorted(entry.key for entry in cache.entries()) == ["busy", "recent"]
    assert [entry.key for entry in cache.prune(unused_for_seconds=None)] == ["busy", "recent"]
    assert cache.entries() == []
