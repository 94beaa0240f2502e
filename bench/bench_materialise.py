"""How long a launcher takes to lay out a project version for a run, cold (fetching) and warm (from its cache).

Stores a generated project (files of mixed sizes) in a local object store the way the api does, then has the
launcher's `VersionReader` materialise it into one run directory with an empty cache, and into many more with a
warm one, and reports the time per run and how many files were fetched, linked, cloned or copied.

    uv run python bench/bench_materialise.py [--files 1000] [--mib 50] [--runs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from ame import project_codecs
from ame.domain.projects import MODE_FILE, ManifestEntry, manifest_digest
from ame_launcher.convert import ProjectSource
from ame_launcher.project_versions import VersionReader
from ame_launcher.settings import LauncherSettings
from ame_platform.storage import LocalObjectStore, StorageSettings


async def _store_project(objects: Path, files: int, total_bytes: int) -> tuple[str, ProjectSource]:
    store = LocalObjectStore(objects)
    entries = []
    for i in range(files):
        # A few big files and many small ones, as in a real project with data beside its code.
        size = total_bytes // 20 if i < 10 else max(1, (total_bytes // 2) // max(1, files - 10))
        data = os.urandom(size)
        sha = hashlib.sha256(data).hexdigest()
        await store.put_bytes(f"orgs/default/blobs/{sha[:2]}/{sha}", data)
        entries.append(ManifestEntry(path=f"pkg{i % 20}/file{i}.bin", mode=MODE_FILE, sha256=sha, size=size))
    version = manifest_digest(entries)
    key = f"orgs/default/manifests/{version[:2]}/{version}"
    await store.put_bytes(key, project_codecs.manifest_object(version, entries))
    return version, ProjectSource(key, "orgs/default/blobs/")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--mib", type=int, default=50)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ame-bench-materialise-"))
    try:
        version, source = await _store_project(root / "objects", args.files, args.mib * 1024 * 1024)
        settings = LauncherSettings(work_dir=root / "launcher", storage=StorageSettings(local_root=root / "objects"))
        reader = VersionReader(settings)
        runs = root / "launcher" / "runs"
        first = runs / "cold"
        first.mkdir(parents=True)
        started = time.perf_counter()
        placed = await reader.materialise(version, source, first)
        cold = time.perf_counter() - started
        print(f"project: {args.files} files, {args.mib} MiB; placement {settings.placement}")
        print(f"cold (empty cache): {cold * 1000:.0f} ms; {placed}")
        timings = []
        for i in range(args.runs):
            run_dir = runs / f"warm{i}"
            run_dir.mkdir()
            started = time.perf_counter()
            placed = await reader.materialise(version, source, run_dir)
            timings.append(time.perf_counter() - started)
            shutil.rmtree(run_dir)  # as the launcher does when a run ends
        timings.sort()
        p95 = timings[int(len(timings) * 0.95) - 1]
        print(
            f"warm: {args.runs} runs, p50 {statistics.median(timings) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms "
            f"per run; last run {placed}"
        )
        await reader.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
