"""Data sets for `ame task run -l`: produced once on this machine (or fetched from the server), cached under
`$AME_HOME/data-sets`, and hard-linked into the project directory at the producer's `path` before the task starts.

Layout under `$AME_HOME/data-sets`:

    cache/                    an `ame.content_cache.ContentCache` (blobs/<sha[:2]>/<sha>, read-only, sealed)
    records/<project>/<name>.json   the newest production: status, definition hash, version, size, run, reason
    manifests/<version id>.json     each version's files (path, mode, sha256, size)
    locks/<project>--<name>.lock    held while a run produces or fetches the data set (one at a time)

A record is reused while the producing task's definition hash is the same; a changed definition, or
`ame datasets refresh -l NAME`, makes the next run produce it again. A failed production stays failed (its
consumers fail with the reason) until then, as on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ame.content_cache import ContentCache, Fetch
from ame.data_sets import DataSetDefinition, DataSetStatus, check_data_set_size, clear_conflicts, scan_output
from ame.domain.data_sets import DataSetSummary
from ame.domain.projects import ManifestEntry, manifest_digest
from ame.runner.home import AmeHome

__all__ = ["DataSetError", "LocalDataSets", "Produce"]

# Runs the producing task in the project directory; returns (run id, succeeded, reason).
Produce = Callable[[DataSetDefinition], Awaitable[tuple[str, bool, str]]]
Notice = Callable[[str], Awaitable[None]]


class DataSetError(Exception):
    """A data set the task reads cannot be had; the message says which and why."""


@dataclass(frozen=True)
class _Record:
    project: str
    name: str
    definition_hash: str
    generation: int
    status: str
    path: str
    version_id: str = ""
    file_count: int = 0
    size_bytes: int = 0
    run_id: str = ""
    reason: str = ""
    updated_at: float = 0.0

    def summary(self) -> DataSetSummary:
        from datetime import UTC, datetime

        return DataSetSummary(
            project=self.project,
            name=self.name,
            status=self.status,
            size_bytes=self.size_bytes,
            file_count=self.file_count,
            version_id=self.version_id,
            run_id=self.run_id,
            reason=self.reason,
            path=self.path,
            definition_hash=self.definition_hash,
            generation=self.generation,
            updated_at=datetime.fromtimestamp(self.updated_at, UTC) if self.updated_at else None,
        )


class LocalDataSets:
    def __init__(self, home: AmeHome) -> None:
        self.root = home.root / "data-sets"
        self.cache = ContentCache(self.root / "cache", "link")

    # -- records -----------------------------------------------------------------------------------------------

    def _record_path(self, project: str, name: str) -> Path:
        return self.root / "records" / project / f"{name}.json"

    def _read(self, project: str, name: str) -> _Record | None:
        try:
            return _Record(**json.loads(self._record_path(project, name).read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def _write(self, record: _Record) -> None:
        path = self._record_path(record.project, record.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(f".{os.getpid()}.tmp")
        temp.write_text(json.dumps(record.__dict__))
        os.replace(temp, path)

    def summaries(self, project: str | None = None) -> list[DataSetSummary]:
        records = []
        for path in sorted((self.root / "records").glob("*/*.json")):
            record = self._read(path.parent.name, path.stem)
            if record is not None and (project is None or record.project == project):
                records.append(record.summary())
        return records

    def forget(self, project: str, name: str) -> bool:
        """Make the next run that reads the data set produce it again; False if it was never produced here."""
        with self._locked(project, name):
            record = self._read(project, name)
            if record is None:
                return False
            self._write(_Record(record.project, record.name, "", record.generation, DataSetStatus.PENDING, record.path))
            return True

    @contextlib.contextmanager
    def _locked(self, project: str, name: str, blocking: bool = True) -> Iterator[bool]:
        path = self.root / "locks" / f"{project}--{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.asynccontextmanager
    async def _holding(self, project: str, name: str, notice: Notice) -> AsyncIterator[None]:
        """The data set's lock, waited for (with a notice) while another run on this machine holds it."""
        stack = contextlib.ExitStack()
        got = stack.enter_context(self._locked(project, name, blocking=False))
        if not got:
            stack.close()
            await notice(f"waiting for data set {name!r} (another run on this machine produces it)")
            got = await asyncio.to_thread(stack.enter_context, self._locked(project, name))
        try:
            yield
        finally:
            stack.close()

    # -- producing and placing ---------------------------------------------------------------------------------

    async def prepare(
        self, project: str, definition: DataSetDefinition, project_dir: Path, produce: Produce, notice: Notice
    ) -> DataSetSummary:
        """The data set's files at its path in `project_dir`, produced first if this definition never was."""
        async with self._holding(project, definition.name, notice):
            record = self._read(project, definition.name)
            # Still running or pending while this process holds the lock: its run was interrupted (Ctrl-C, a kill)
            # before it recorded an end, so it is produced again rather than blocking the data set for good.
            stale = record is not None and record.status in (DataSetStatus.RUNNING, DataSetStatus.PENDING)
            fresh = record is None or record.definition_hash != definition.definition_hash or stale
            if record is None or fresh:
                generation = record.generation + 1 if record is not None else 1
                record = await self._produce(project, definition, project_dir, produce, generation, notice)
            if record.status == DataSetStatus.FAILED:
                hint = "" if fresh else f"; `ame datasets refresh -l {definition.name}` produces it again"
                raise DataSetError(f"data set {definition.name!r} failed: {record.reason}{hint}")
            if record.status != DataSetStatus.READY:
                raise DataSetError(f"data set {definition.name!r} is {record.status}")
            entries = self._manifest(record.version_id)
            await self.place(record.path, entries, project_dir)
            return record.summary()

    async def _produce(
        self,
        project: str,
        definition: DataSetDefinition,
        project_dir: Path,
        produce: Produce,
        generation: int,
        notice: Notice,
    ) -> _Record:
        base = _Record(project, definition.name, definition.definition_hash, generation, "running", definition.path)
        self._write(base)
        await notice(f"data set {definition.name!r}: producing it with task {definition.producer.name!r}")
        run_id, succeeded, reason = await produce(definition)
        if not succeeded:
            failed = _Record(
                **{**base.__dict__, "status": "failed", "run_id": run_id, "reason": reason, "updated_at": time.time()}
            )
            self._write(failed)
            return failed
        output = project_dir / definition.path
        if not output.is_dir():
            reason = f"the task left nothing at the data set's path {definition.path!r}"
            failed = _Record(
                **{**base.__dict__, "status": "failed", "run_id": run_id, "reason": reason, "updated_at": time.time()}
            )
            self._write(failed)
            return failed
        entries = await asyncio.to_thread(scan_output, output)
        try:
            check_data_set_size(definition.name, entries, definition.max_bytes)
        except ValueError as exc:
            failed = _Record(
                **{**base.__dict__, "status": "failed", "run_id": run_id, "reason": str(exc), "updated_at": time.time()}
            )
            self._write(failed)
            return failed
        version_id = await self.store(entries, output)
        ready = _Record(
            **{
                **base.__dict__,
                "status": "ready",
                "run_id": run_id,
                "version_id": version_id,
                "file_count": len(entries),
                "size_bytes": sum(e.size for e in entries),
                "updated_at": time.time(),
            }
        )
        self._write(ready)
        return ready

    async def store(self, entries: list[ManifestEntry], source: Path) -> str:
        """Put the files of `source` (described by `entries`) into the cache and record their manifest; returns
        the version id (the manifest's digest, as on the server)."""
        version_id = manifest_digest(entries)
        staging = self.root / "staging" / f"{version_id[:16]}-{os.getpid()}"

        async def fetch(sha256: str, temp: Path) -> None:
            entry = next(e for e in entries if e.sha256 == sha256)
            await asyncio.to_thread(shutil.copyfile, source / entry.path, temp)

        try:
            await self.cache.materialise(entries, staging, fetch, "link")
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)
        self._write_manifest(version_id, entries)
        return version_id

    def _write_manifest(self, version_id: str, entries: list[ManifestEntry]) -> None:
        path = self.root / "manifests" / f"{version_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(f".{os.getpid()}.tmp")
        temp.write_text(json.dumps([[e.path, e.mode, e.sha256, e.size] for e in entries]))
        os.replace(temp, path)

    def _manifest(self, version_id: str) -> list[ManifestEntry]:
        rows = json.loads((self.root / "manifests" / f"{version_id}.json").read_text())
        return [ManifestEntry(path=p, mode=m, sha256=s, size=n) for p, m, s, n in rows]

    async def place(
        self, path: str, entries: list[ManifestEntry], project_dir: Path, fetch: Fetch | None = None
    ) -> None:
        """Hard-link the version's files from the cache at `path` in `project_dir` (files there that the data set
        does not hold are left alone); `fetch` brings a blob the cache lacks (from the server)."""
        prefixed = [e.model_copy(update={"path": f"{path}/{e.path}"}) for e in entries]

        async def gone(sha256: str, temp: Path) -> None:
            raise DataSetError(f"blob {sha256} left the data set cache; run `ame datasets refresh -l` and try again")

        await asyncio.to_thread(clear_conflicts, project_dir, [e.path for e in prefixed])
        await self.cache.materialise(prefixed, project_dir, fetch or gone, "link")

    async def fetched(
        self, summary: DataSetSummary, entries: list[ManifestEntry], project_dir: Path, fetch: Fetch, notice: Notice
    ) -> None:
        """Place a server's ready version (blobs the cache lacks come through `fetch`) and record it here."""
        async with self._holding(summary.project, summary.name, notice):
            await self.place(summary.path, entries, project_dir, fetch)
            self._write_manifest(summary.version_id, entries)
            self._write(
                _Record(
                    summary.project,
                    summary.name,
                    summary.definition_hash,
                    summary.generation,
                    DataSetStatus.READY,
                    summary.path,
                    version_id=summary.version_id,
                    file_count=summary.file_count,
                    size_bytes=summary.size_bytes,
                    run_id=summary.run_id,
                    reason="fetched from the server",
                    updated_at=time.time(),
                )
            )
