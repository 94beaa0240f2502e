"""The launcher's content cache: a blob is fetched once, placed without copying, and survives a killed launcher."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from ame.domain.projects import MODE_EXECUTABLE, MODE_FILE, MODE_SYMLINK, ManifestEntry
from ame_launcher.content_cache import ContentCache, MaterialiseError

FILES = {
    "ame.yml": b"project: demo\n",
    "data/input.txt": b"some data\n",
    "copy-of-input.txt": b"some data\n",  # same blob twice
    "run.sh": b"#!/bin/sh\necho hi\n",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest(files: dict[str, bytes] = FILES) -> list[ManifestEntry]:
    entries = [
        ManifestEntry(path=p, mode=MODE_EXECUTABLE if p.endswith(".sh") else MODE_FILE, sha256=_sha(d), size=len(d))
        for p, d in files.items()
    ]
    target = b"data/input.txt"
    entries.append(ManifestEntry(path="link.txt", mode=MODE_SYMLINK, sha256=_sha(target), size=len(target)))
    return entries


class Store:
    """Blobs by sha256, counting every fetch."""

    def __init__(self, files: dict[str, bytes] = FILES) -> None:
        self.blobs = {_sha(d): d for d in [*files.values(), b"data/input.txt"]}
        self.fetches: Counter[str] = Counter()

    async def fetch(self, sha256: str, dest: Path) -> None:
        self.fetches[sha256] += 1
        await asyncio.sleep(0.01)  # let concurrent materialisations overlap
        dest.write_bytes(self.blobs[sha256])


def _check_tree(run_dir: Path) -> None:
    assert (run_dir / "data/input.txt").read_bytes() == b"some data\n"
    assert (run_dir / "copy-of-input.txt").read_bytes() == b"some data\n"
    assert os.access(run_dir / "run.sh", os.X_OK)
    assert not os.access(run_dir / "ame.yml", os.X_OK)
    assert os.readlink(run_dir / "link.txt") == "data/input.txt"
    assert (run_dir / "link.txt").read_bytes() == b"some data\n"


async def test_many_runs_of_one_version_fetch_once_and_copy_nothing(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache", "link")
    store = Store()
    runs = [tmp_path / f"run{i}" for i in range(5)]
    for run_dir in runs:
        run_dir.mkdir()
        placed = await cache.materialise(_manifest(), run_dir, store.fetch)
        assert placed.copied == 0
        _check_tree(run_dir)
    assert set(store.fetches.values()) == {1}
    assert len(store.fetches) == len(store.blobs)
    # Every run's file is the cache's inode: 1 cache entry + 2 files per run share the data blob.
    blob = cache.blob_path(_sha(b"some data\n"))
    assert blob.stat().st_nlink == 1 + 2 * len(runs)
    assert (runs[0] / "data/input.txt").stat().st_ino == blob.stat().st_ino
    # Read-only, so a task cannot edit the cache through its link (unless it ignores permissions).
    assert blob.stat().st_mode & 0o222 == 0


async def test_auto_placement_clones_or_links_never_copies_here(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    placed = await cache.materialise(_manifest(), run_dir, Store().fetch)
    assert placed.copied == 0
    assert placed.reflinked + placed.linked == 4
    _check_tree(run_dir)


async def test_copy_placement_gives_each_run_a_writable_copy(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache", "copy")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    placed = await cache.materialise(_manifest(), run_dir, Store().fetch)
    assert placed.copied == 4
    (run_dir / "data/input.txt").write_bytes(b"edited")
    assert cache.blob_path(_sha(b"some data\n")).read_bytes() == b"some data\n"


async def test_concurrent_materialisations_fetch_each_blob_once(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache", "link")
    store = Store()
    runs = [tmp_path / f"run{i}" for i in range(20)]
    for run_dir in runs:
        run_dir.mkdir()
    await asyncio.gather(*(cache.materialise(_manifest(), run_dir, store.fetch) for run_dir in runs))
    assert set(store.fetches.values()) == {1}
    for run_dir in runs:
        _check_tree(run_dir)


async def test_an_entry_edited_in_place_is_dropped_and_fetched_again(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache", "link")
    store = Store()
    first = tmp_path / "first"
    first.mkdir()
    await cache.materialise(_manifest(), first, store.fetch)
    # What a task running as root could do through its hard link.
    linked = first / "data/input.txt"
    os.chmod(linked, 0o644)
    linked.write_bytes(b"corrupted!")
    second = tmp_path / "second"
    second.mkdir()
    await cache.materialise(_manifest(), second, store.fetch)
    _check_tree(second)
    assert store.fetches[_sha(b"some data\n")] == 2


async def test_bytes_that_do_not_match_their_digest_are_refused_and_not_cached(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache", "link")

    async def lying_fetch(sha256: str, dest: Path) -> None:
        dest.write_bytes(b"not what the manifest says")

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(MaterialiseError, match="not the"):
        await cache.materialise(_manifest(), run_dir, lying_fetch)
    assert not any(p.is_file() for p in (tmp_path / "cache" / "blobs").rglob("*"))
    assert not any((tmp_path / "cache" / "tmp").iterdir())


async def test_a_fetch_that_fails_halfway_leaves_a_usable_cache(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache", "link")

    async def broken_fetch(sha256: str, dest: Path) -> None:
        dest.write_bytes(b"half")
        raise ConnectionError("the store went away")

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(ConnectionError):
        await cache.materialise(_manifest(), run_dir, broken_fetch)
    store = Store()
    again = tmp_path / "again"
    again.mkdir()
    await cache.materialise(_manifest(), again, store.fetch)
    _check_tree(again)


_KILLED_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from ame.domain.projects import ManifestEntry
    from ame_launcher.content_cache import ContentCache

    async def fetch(sha256, dest):
        with open(dest, "wb") as out:
            out.write(b"partial")
            out.flush()
            Path(sys.argv[2]).write_text("writing")
            await asyncio.sleep(3600)

    entry = ManifestEntry(path="big.bin", mode=0o100644, sha256=sys.argv[3], size=int(sys.argv[4]))
    run_dir = Path(sys.argv[1]) / "run"
    run_dir.mkdir()
    asyncio.run(ContentCache(Path(sys.argv[1]) / "cache", "link").materialise([entry], run_dir, fetch))
    """
)


async def test_a_launcher_killed_mid_materialise_leaves_a_cache_the_next_one_uses(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    marker = tmp_path / "writing"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHILD, str(tmp_path), str(marker), _sha(data), str(len(data))]
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert child.poll() is None, "the child exited before it was killed"
            assert time.monotonic() < deadline, "the child never started fetching"
            await asyncio.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    cache = ContentCache(tmp_path / "cache", "link")
    assert not cache.blob_path(_sha(data)).exists(), "a half-written blob entered the cache"
    fetches: list[str] = []

    async def fetch(sha256: str, dest: Path) -> None:
        fetches.append(sha256)
        dest.write_bytes(data)

    entry = ManifestEntry(path="big.bin", mode=MODE_FILE, sha256=_sha(data), size=len(data))
    run_dir = tmp_path / "next-run"
    run_dir.mkdir()
    await cache.materialise([entry], run_dir, fetch)
    assert (run_dir / "big.bin").read_bytes() == data
    assert fetches == [_sha(data)]
    # And the one after that needs nothing from the store.
    later = tmp_path / "later-run"
    later.mkdir()
    placed = await cache.materialise([entry], later, fetch)
    assert placed.fetched == 0
    assert fetches == [_sha(data)]


async def test_a_symlink_out_of_the_project_is_refused(tmp_path: Path) -> None:
    target = b"../../etc/passwd"
    store = Store()
    store.blobs[_sha(target)] = target
    entry = ManifestEntry(path="evil", mode=MODE_SYMLINK, sha256=_sha(target), size=len(target))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(MaterialiseError, match="points out of the project"):
        await ContentCache(tmp_path / "cache").materialise([entry], run_dir, store.fetch)


_CONCURRENT_CHILD = textwrap.dedent(
    """
    import asyncio, hashlib, sys
    from pathlib import Path
    from ame.domain.projects import ManifestEntry
    from ame_launcher.content_cache import ContentCache

    blobs = {hashlib.sha256(bytes([i]) * 50_000).hexdigest(): bytes([i]) * 50_000 for i in range(40)}

    async def fetch(sha256, dest):
        await asyncio.sleep(0.005)
        dest.write_bytes(blobs[sha256])

    entries = [ManifestEntry(path=f"f{n}.bin", mode=0o100644, sha256=s, size=50_000) for n, s in enumerate(blobs)]
    run_dir = Path(sys.argv[2])
    run_dir.mkdir()
    asyncio.run(ContentCache(Path(sys.argv[1]), "link").materialise(entries, run_dir, fetch))
    """
)


def test_launchers_materialising_one_version_at_once_share_one_cache(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    children = [
        subprocess.Popen([sys.executable, "-c", _CONCURRENT_CHILD, str(cache_dir), str(tmp_path / f"run{i}")])
        for i in range(4)
    ]
    assert [child.wait(timeout=60) for child in children] == [0, 0, 0, 0]
    for i in range(4):
        files = sorted((tmp_path / f"run{i}").iterdir())
        assert len(files) == 40
        for path in files:
            data = path.read_bytes()
            assert len(data) == 50_000 and data == data[:1] * 50_000
    blobs = [p for p in (cache_dir / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 40
    # Every run's file is a link to the one cached inode (whichever process's fetch won the rename).
    assert all(p.stat().st_nlink >= 2 for p in blobs)
    assert sum(p.stat().st_nlink - 1 for p in blobs) == 4 * 40


async def test_prune_removes_unused_blobs_and_keeps_those_a_run_directory_links(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache", "link")
    store = Store({"ame.yml": b"project: demo\n", "old.txt": b"an old file\n"})
    kept_run, gone_run = tmp_path / "kept", tmp_path / "gone"
    kept_run.mkdir()
    gone_run.mkdir()
    await cache.materialise(_manifest({"ame.yml": b"project: demo\n"}), kept_run, store.fetch)
    await cache.materialise(_manifest({"old.txt": b"an old file\n"}), gone_run, store.fetch)
    shutil.rmtree(gone_run)
    # Nothing is old enough yet: a fresh blob stays even when no run links it.
    assert await cache.prune(3600) == 0
    # An hour on: the blobs only the removed run used go (and the symlink's target text, which a link is made
    # from, not linked to); those the live run links stay.
    assert await cache.prune(3600, now=time.time() + 7200) == 2
    assert not cache.blob_path(_sha(b"an old file\n")).exists()
    assert cache.blob_path(_sha(b"project: demo\n")).exists()
    assert not cache.blob_path(_sha(b"data/input.txt")).exists()
    # A pruned blob is fetched again the next time a run needs it.
    again = tmp_path / "again"
    again.mkdir()
    await cache.materialise(_manifest({"old.txt": b"an old file\n"}), again, store.fetch)
    assert (again / "old.txt").read_bytes() == b"an old file\n"
    assert store.fetches[_sha(b"an old file\n")] == 2
