"""A pod's artifacts: the upload form its runner gets, the index the launcher writes once the pod ended, and
another run's artifacts as plan entries (`RunSpec.input_run_id`, fetched by URL like the project's files).

The form (a presigned POST) uploads under the attempt's artifact prefix only. The runner uploads each file and
then a listing (path, size, sha256); the launcher turns the listing into the attempt's index, which is what
makes the artifacts visible to the api, exactly as the local backend's `AttemptArtifacts.finish` does.
"""

from __future__ import annotations

import json
from typing import Any

from ame import codecs
from ame.domain.artifacts import (
    Artifact,
    ArtifactPathError,
    artifact_key,
    check_artifact_path,
    index_attempt,
    index_key,
    index_prefix,
    latest_by_path,
)
from ame.storage import ObjectNotFound
from ame_platform.storage import S3ObjectStore

LISTING = ".ame-listing.json"


def attempt_prefix(organisation: str, run_id: str, attempt: int) -> str:
    return artifact_key(organisation, run_id, attempt, "x")[:-1]


async def upload_form(store: S3ObjectStore, organisation: str, run_id: str, attempt: int, ttl: int) -> dict[str, Any]:
    prefix = attempt_prefix(organisation, run_id, attempt)
    form = await store.presigned_post(prefix, ttl)
    return {**form, "prefix": prefix, "listing": prefix + LISTING}


async def write_index(
    store: S3ObjectStore, organisation: str, run_id: str, attempt: int, *, always: bool = False
) -> int:
    """Index what the pod's runner listed; returns how many artifacts (0 when it listed nothing or none). With
    `always` an empty index is written too (a pipeline step's)."""
    listing_key = attempt_prefix(organisation, run_id, attempt) + LISTING
    try:
        listed = json.loads(await store.get_bytes(listing_key))
    except (ObjectNotFound, ValueError):
        return 0
    saved: list[Artifact] = []
    for entry in listed if isinstance(listed, list) else []:
        try:
            path = check_artifact_path(str(entry["path"]))
            saved.append(Artifact(path=path, size=int(entry["size"]), sha256=str(entry["sha256"]), attempt=attempt))
        except (ArtifactPathError, KeyError, TypeError, ValueError):
            continue  # a pod can write only under its own prefix; what it lists wrongly is left out
    if saved or always:
        data = codecs.artifact_index_to_bytes(run_id, attempt, saved)
        await store.put_bytes(index_key(organisation, run_id, attempt), data)
    await store.delete(listing_key)
    return len(saved)


async def input_files(store: S3ObjectStore, organisation: str, run_id: str, ttl: int) -> list[dict[str, Any]]:
    """The artifacts of `run_id` (each path's latest attempt, as the api lists them and the local backend places
    them) as plan file entries; the keys are under the launching run's organisation, so no other's are reachable.
    Raises ValueError for an unreadable index."""
    found: list[Artifact] = []
    for info in await store.list(index_prefix(organisation, run_id)):
        if index_attempt(info.key) is None:
            continue
        try:
            found.extend(codecs.artifact_index_from_bytes(await store.get_bytes(info.key)))
        except ObjectNotFound:
            continue  # deleted between the listing and the read: as if never written
    entries: list[dict[str, Any]] = []
    for artifact in sorted(latest_by_path(found).values(), key=lambda a: a.path):
        key = artifact_key(organisation, run_id, artifact.attempt, artifact.path)
        entries.append(
            {
                "path": artifact.path,
                "url": await store.presigned_get(key, ttl),
                "sha256": artifact.sha256,
                "executable": False,
            }
        )
    return entries
