"""Data sets on the server: produced once when a consumer first needs them, then reused.

A version's data sets (path, producing task as a run spec, definition hash) are recorded when it is committed.
A run that reads data sets is checked when it is submitted (`prepare`): each data set's current production is
found or made (`data_sets`, unique per organisation, project, name, definition hash and generation, so two
consumers, or two api replicas, share one row), and its producing run is submitted under the idempotency key
`dataset:<org>:<project>:<name>:<hash>` (so they share one run too). In the consumer's own transaction the rows
are locked: a run whose data sets are all ready is admitted with their versions in its launch command; otherwise
it waits in `data_set_waiters` with the reason "waiting for data set X". The registry tells this service about
each run event (`on_run_event`): the production goes `running`, then `ready` with the version the launcher stored
(read from the object store) and its waiting runs are admitted, or `failed` and its waiting runs fail with the
reason. Nothing polls: every step follows a submit or a run event.
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ame import bus_messages
from ame.data_sets import DataSetStatus, production_key
from ame.domain import RunSpec, RunState, TriggerKind
from ame.domain.data_sets import DataSetSummary
from ame.domain.principals import Principal
from ame.domain.projects import PROJECT_NAME, ManifestEntry, ManifestError, check_sha256, manifest_digest
from ame_api import convert
from ame_api.admission import Refused
from ame_api.project_store import StoreComponent
from ame_api.repositories import data_sets as repo
from ame_api.repositories import runs as runs_repo
from ame_api.repositories.data_sets import DataSetRow, Definition
from ame_api.repositories.runs import NotFound
from ame_api.runs import Conflict, InvalidRequest
from ame_api.spooling import spooled
from ame_platform.bus.publisher import headers_for
from ame_platform.db import Connection
from ame_platform.runtime import Runtime
from ame_platform.storage import InvalidKeyError, ObjectNotFound

if TYPE_CHECKING:
    from ame_api.admission import Submitted
    from ame_api.runs import RunService

log = logging.getLogger(__name__)
_NAME = re.compile(PROJECT_NAME)
# The productions (organisation, project, name, definition hash) this task is submitting the producing runs of, in
# order: a producer reads data sets, whose producers are submitted first, and one that is already on the way there
# is a cycle (the push refuses only a producer reading its own data set; longer cycles, also across projects, are
# found here).
_PRODUCING: contextvars.ContextVar[tuple[tuple[str, str, str, str], ...]] = contextvars.ContextVar(
    "ame_data_set_productions", default=()
)

__all__ = ["DataSetService", "Needed", "result_key"]


def result_key(organisation: str, data_set_id: str) -> str:
    """Where the producing run's launcher leaves the version id it stored."""
    return f"orgs/{organisation}/data-sets/{data_set_id}/result"


def data_set_blob_prefix(organisation: str) -> str:
    """Data set blobs lie apart from project blobs, so project retention (which removes blobs no version lists)
    never removes a file a data set version holds."""
    return f"orgs/{organisation}/data-set-blobs/"


def data_set_manifest_prefix(organisation: str) -> str:
    return f"orgs/{organisation}/data-set-manifests/"


def data_set_manifest_key(organisation: str, version_id: str) -> str:
    return f"{data_set_manifest_prefix(organisation)}{version_id[:2]}/{version_id}"


@dataclass(frozen=True)
class Needed:
    """A data set a submitted run reads: its current production's row id."""

    name: str
    data_set_id: str


class DataSetService:
    def __init__(self, runtime: Runtime, store: StoreComponent, runs: RunService, spool_dir: Path | None) -> None:
        self._rt = runtime
        self._store = store
        self._runs = runs
        self._spool_dir = spool_dir
        # Parsed manifests of ready versions (checked against their ids), most recent last.
        self._manifests: dict[tuple[str, str], list[ManifestEntry]] = {}

    # -- submit ------------------------------------------------------------------------------------------------

    async def prepare(self, principal: Principal, spec: RunSpec) -> list[Needed]:
        """Before a consumer's submit: each data set it reads has a production row and a producing run."""
        org = principal.organisation
        async with self._rt.pool.acquire() as conn:
            try:
                # Before the run waits (and its data sets are produced for it): a run no limit lets in is refused
                # now, as admission would refuse it were its data sets ready.
                await self._runs.admission.check_limits(conn, org, spec)
            except Refused as exc:
                raise InvalidRequest(str(exc)) from None
        needed = []
        for ref in spec.data_sets:
            project = ref.project or spec.project
            same = project == spec.project and bool(spec.project_version_id)
            async with self._rt.pool.acquire() as conn:
                definition = await repo.find_definition(
                    conn,
                    organisation=org,
                    project=project,
                    name=ref.name,
                    version_id=spec.project_version_id if same else None,
                )
            if definition is None:
                where = (
                    f"version {spec.project_version_id[:12]} of project {project!r}" if same else f"project {project!r}"
                )
                raise InvalidRequest(
                    f"data set {ref.name!r} is not declared (with a task) in {where}; push the project that declares it"
                )
            row = await self._production(org, definition, fresh=False)
            needed.append(Needed(ref.name, row.id))
        return needed

    async def _production(self, org: str, definition: Definition, *, fresh: bool) -> DataSetRow:
        async with self._rt.pool.acquire() as conn, conn.transaction():
            row = await repo.ensure(conn, organisation=org, definition=definition, fresh=fresh)
        if row.run_id:
            return row
        producing = _PRODUCING.get()
        this = (org, definition.project, definition.name, definition.definition_hash)
        if this in producing:
            chain = [*producing[producing.index(this) :], this]
            names = [name if project == definition.project else f"{project}:{name}" for _, project, name, _ in chain]
            raise InvalidRequest("data set cycle: " + " -> ".join(names))
        token = _PRODUCING.set((*producing, this))
        try:
            return await self._submit_production(org, definition, row)
        finally:
            _PRODUCING.reset(token)

    async def _submit_production(self, org: str, definition: Definition, row: DataSetRow) -> DataSetRow:
        # Every caller that finds no run submits the same one: the idempotency key makes it one run.
        output = bus_messages.DataSetOutput(
            name=definition.name,
            path=definition.path,
            blob_prefix=data_set_blob_prefix(org),
            manifest_prefix=data_set_manifest_prefix(org),
            result_key=result_key(org, row.id),
            max_bytes=definition.max_bytes,
        )
        producer = definition.producer.model_copy(update={"labels": {"ame.data-set": definition.name}})
        key = production_key(org, definition.project, definition.name, definition.definition_hash, row.generation)
        try:
            run_id = (
                await self._runs.submit(
                    Principal.trigger(org, "data-set"),
                    producer,
                    trigger=TriggerKind.API,
                    idempotency_key=key,
                    data_set_output=output,
                )
            ).id
        except Conflict:
            # A consumer of another version with the same definition submitted it first (its spec names that
            # version): the production is that run.
            async with self._rt.pool.acquire() as conn:
                found = await repo.run_by_key(conn, org, key)
            if found is None:
                raise
            run_id = found
        async with self._rt.pool.acquire() as conn:
            await repo.set_run(conn, row.id, run_id)
            run = await runs_repo.find_run(conn, run_id, organisation=org)
        if run is not None and (run.state == RunState.RUNNING or run.state.terminal):
            # Its events may have reached the registry before the row named the run: apply them here.
            await self.on_run_event(run_id, run.state, run.reason)
        async with self._rt.pool.acquire() as conn:
            fresh_row = await repo.get(conn, row.id)
        assert fresh_row is not None
        return fresh_row

    async def hold(
        self, conn: Connection, org: str, needed: Sequence[Needed], command: bytes
    ) -> tuple[bytes, str | None, str | None]:
        """In the consumer's submit transaction, before its run row: lock the productions and decide.

        Returns the launch command (with the data set versions when all are ready), the reason the run waits (if
        it does) and the reason it fails (if a production failed)."""
        rows = {r.id: r for r in await repo.lock(conn, [n.data_set_id for n in needed])}
        by_need = [(n, rows[n.data_set_id]) for n in needed]
        failed = [(n, r) for n, r in by_need if r.status == DataSetStatus.FAILED]
        if failed:
            need, row = failed[0]
            hint = f"; `ame datasets refresh {need.name}` produces it again"
            return command, None, f"data set {need.name!r} failed: {row.reason}{hint}"
        pending = [n for n, r in by_need if r.status != DataSetStatus.READY]
        if pending:
            return command, "waiting for data set " + ", ".join(repr(n.name) for n in pending), None
        return bus_messages.with_data_sets(command, [_source(org, n.name, r) for n, r in by_need]), None, None

    async def wait(self, conn: Connection, run_id: str, needed: Sequence[Needed], reason: str) -> None:
        """In the submit transaction, after the run row (and `hold`, whose locks still hold): the run waits."""
        rows = {r.id: r for r in await repo.lock(conn, [n.data_set_id for n in needed])}
        await repo.add_waiters(
            conn, run_id, [(n.name, n.data_set_id, rows[n.data_set_id].status != DataSetStatus.READY) for n in needed]
        )
        await repo.set_run_reason(conn, run_id, reason)

    # -- run events --------------------------------------------------------------------------------------------

    async def on_run_event(self, run_id: str, state: RunState, reason: str) -> None:
        """A run moved: if it produces a data set, move the data set (idempotent; stale events change nothing)."""
        if state != RunState.RUNNING and not state.terminal:
            return
        async with self._rt.pool.acquire() as conn:
            row = await repo.find_by_run(conn, run_id, lock=False)
            if row is None or row.status in (DataSetStatus.READY, DataSetStatus.FAILED):
                return
            if state == RunState.RUNNING:
                await repo.mark_running(conn, row.id)
                return
            run = await runs_repo.find_run(conn, run_id, organisation=row.organisation)
        if run is None or not run.state.terminal:
            return  # another attempt follows; the production goes on
        if run.state == RunState.SUCCEEDED:
            await self._ready(row)
        else:
            why = run.reason or reason or run.state.value
            await self._failed(row, f"its producing run {run_id} ended {run.state.value}: {why}")

    async def _ready(self, row: DataSetRow) -> None:
        store = self._store.store
        try:
            version_id = (await store.get_bytes(result_key(row.organisation, row.id))).decode("ascii").strip()
            manifest = await store.get_bytes(data_set_manifest_key(row.organisation, version_id))
            _, entries = convert.parse_manifest_object(manifest)
        except (ObjectNotFound, InvalidKeyError, UnicodeDecodeError, convert.DecodeError) as exc:
            await self._failed(row, f"its producing run {row.run_id} stored no readable version ({exc})")
            return
        released: list[tuple[str, Submitted]] = []
        refused: list[tuple[str, str]] = []
        async with self._rt.pool.acquire() as conn, conn.transaction():
            current = await repo.find_by_run(conn, row.run_id)
            if current is None or current.status in (DataSetStatus.READY, DataSetStatus.FAILED):
                return
            await repo.update(
                conn,
                row.id,
                status=DataSetStatus.READY,
                version_id=version_id,
                file_count=len(entries),
                size_bytes=sum(e.size for e in entries),
            )
            for waiter in await repo.stop_waiting(conn, row.id):
                try:
                    submitted = await self._release(conn, waiter)
                except Refused as exc:
                    # Its organisation's limits changed while it waited: it fails, the data set is ready all the same.
                    refused.append((waiter, str(exc)))
                    continue
                if submitted is not None:
                    released.append((waiter, submitted))
        log.info("data set %s/%s: version %s ready", row.project, row.name, version_id[:12])
        for waiter, why in refused:
            await self._runs.fail_queued(waiter, row.organisation, why)
        for waiter, submitted in released:
            await self._runs.admission.after_submit(waiter, submitted)

    async def _release(self, conn: Connection, run_id: str) -> Submitted | None:
        """A waiting run whose data sets are all ready: put their versions in its command and hand it to admission."""
        found = await repo.queued_run(conn, run_id)
        if found is None:
            return None  # it ended meanwhile (cancelled)
        org, spec, command = found
        reads = await repo.read_by(conn, run_id)
        if any(row.status != DataSetStatus.READY for _, row in reads):
            return None
        command = bus_messages.with_data_sets(command, [_source(org, name, row) for name, row in reads])
        # A savepoint: a run admission refuses (Refused) leaves nothing behind in the data set's transaction.
        async with conn.transaction():
            await repo.set_run_command(conn, run_id, command)
            await repo.set_run_reason(conn, run_id, "")
            return await self._runs.admission.on_submit(
                conn,
                run_id=run_id,
                organisation=org,
                spec=spec,
                subject=self._rt.names.run_launch,
                command=command,
                headers=headers_for(bus_messages.launch_msg_id(run_id, 1)),
            )

    async def _failed(self, row: DataSetRow, reason: str) -> None:
        async with self._rt.pool.acquire() as conn, conn.transaction():
            current = await repo.find_by_run(conn, row.run_id)
            if current is None or current.status in (DataSetStatus.READY, DataSetStatus.FAILED):
                return
            await repo.update(conn, row.id, status=DataSetStatus.FAILED, reason=reason)
            waiters = await repo.drop_waiters(conn, row.id)
        log.info("data set %s/%s failed: %s", row.project, row.name, reason)
        for waiter in waiters:
            await self._runs.fail_queued(waiter, row.organisation, f"data set {row.name!r} failed: {reason}")

    # -- list, refresh -----------------------------------------------------------------------------------------

    async def list_current(self, principal: Principal, project: str | None = None) -> list[DataSetSummary]:
        async with self._rt.pool.acquire() as conn:
            rows = await repo.list_current(conn, organisation=principal.organisation, project=project or None)
        return [row.summary() for row in rows]

    async def get(
        self, principal: Principal, project: str, name: str, definition_hash: str, *, produce: bool
    ) -> tuple[DataSetSummary, list[ManifestEntry] | None]:
        """The data set as this definition of it (empty: the latest pushed version's) is produced, with the
        version's files once ready; `produce` starts its production if none has started."""
        org = principal.organisation
        _check_name("project", project)
        _check_name("data set", name)
        async with self._rt.pool.acquire() as conn:
            if definition_hash:
                definition = await repo.find_definition_by_hash(
                    conn, organisation=org, project=project, name=name, definition_hash=definition_hash
                )
            else:
                definition = await repo.find_definition(
                    conn, organisation=org, project=project, name=name, version_id=None
                )
            row = None
            if definition is not None and not produce:
                row = await repo.find_current(
                    conn, organisation=org, project=project, name=name, definition_hash=definition.definition_hash
                )
        if definition is None:
            raise NotFound(
                f"project {project!r} has no data set {name!r}"
                + (" with this definition (push the project to produce it on the server)" if definition_hash else "")
            )
        if produce:
            row = await self._production(org, definition, fresh=False)
        if row is None:
            raise NotFound(f"data set {name!r} of project {project!r} was not produced yet")
        if row.status != DataSetStatus.READY:
            return row.summary(), None
        return row.summary(), await self._entries(org, row.version_id)

    async def _entries(self, org: str, version_id: str) -> list[ManifestEntry]:
        kept = self._manifests.get((org, version_id))
        if kept is not None:
            return kept
        data = await self._store.store.get_bytes(data_set_manifest_key(org, version_id))
        stored_id, entries = convert.parse_manifest_object(data)
        if stored_id != version_id or manifest_digest(entries) != version_id:
            raise RuntimeError(f"the stored manifest of data set version {version_id} does not match it")
        self._manifests[(org, version_id)] = entries
        while len(self._manifests) > 16:
            self._manifests.pop(next(iter(self._manifests)))
        return entries

    async def read_blob(
        self, principal: Principal, project: str, name: str, version_id: str, sha256: str
    ) -> AsyncIterator[bytes]:
        """One file of a ready version of the data set, from a spooled copy (as project blobs are served)."""
        org = principal.organisation
        _check_name("project", project)
        _check_name("data set", name)
        try:
            check_sha256(sha256)
            check_sha256(version_id)
        except ManifestError as exc:
            raise InvalidRequest(str(exc)) from None
        async with self._rt.pool.acquire() as conn:
            known = await repo.has_version(conn, organisation=org, project=project, name=name, version_id=version_id)
        missing = f"data set {name!r} of project {project!r} has no ready version {version_id[:12]} with blob {sha256}"
        if not known or all(e.sha256 != sha256 for e in await self._entries(org, version_id)):
            raise NotFound(missing)
        return await spooled(
            self._store.store,
            f"{data_set_blob_prefix(org)}{sha256[:2]}/{sha256}",
            spool_dir=self._spool_dir,
            prefix="data-set-blob-",
            missing=missing,
        )

    async def refresh(self, principal: Principal, project: str, name: str) -> DataSetSummary:
        """Produce the data set again (as the project's latest version declares it), whatever version it has."""
        org = principal.organisation
        _check_name("project", project)
        _check_name("data set", name)
        async with self._rt.pool.acquire() as conn:
            definition = await repo.find_definition(conn, organisation=org, project=project, name=name, version_id=None)
        if definition is None:
            raise NotFound(f"project {project!r} has no data set {name!r} (in its latest pushed version)")
        return (await self._production(org, definition, fresh=True)).summary()


def _check_name(what: str, value: str) -> None:
    if len(value) > 200 or not _NAME.match(value):
        raise InvalidRequest(f"{what} name {value[:80]!r} is not valid")


def _source(org: str, name: str, row: DataSetRow) -> bus_messages.DataSetSource:
    return bus_messages.DataSetSource(
        name=name,
        path=row.path,
        version_id=row.version_id,
        manifest_key=data_set_manifest_key(org, row.version_id),
        blob_prefix=data_set_blob_prefix(org),
    )
