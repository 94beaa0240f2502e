"""Project versions against the real in-process stack (local object store): push, list, fetch, bad input, faults."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.project.v1 import project_pb2
from ame.domain.projects import MODE_SYMLINK, manifest_digest
from ame.spec import SpecError, load_project_text
from tests.integration.clients import Grpc
from tests.integration.project_support import as_json, make_project, manifest_of, rest_push, sdk_push, sha
from tests.stack_fixtures import Stack

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


async def test_rest_push_list_and_fetch(rest: httpx.AsyncClient, tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    entries = manifest_of(root)
    missing = await rest.post("/v1/projects/demo/missing-blobs", json=as_json(entries))
    assert sorted(missing.json()["missing"]) == sorted({e.sha256 for e in entries})

    first = await rest_push(rest, root)
    assert first.status_code == 201, first.text
    version = first.json()
    assert version["id"] == manifest_digest(entries)
    assert (version["project"], version["organisation"], version["file_count"]) == ("demo", "default", len(entries))

    # Nothing is missing any more, and the same tree commits to the same version.
    missing = await rest.post("/v1/projects/demo/missing-blobs", json=as_json(entries))
    assert missing.json() == {"missing": []}
    again = await rest.post("/v1/projects/demo/versions", json=as_json(entries))
    assert (again.status_code, again.json()["id"]) == (200, version["id"])

    (root / "hello.py").write_text("print('changed')\n")
    second = await rest_push(rest, root)
    assert second.status_code == 201
    listed = (await rest.get("/v1/projects/demo/versions")).json()
    assert [v["id"] for v in listed["versions"]] == [second.json()["id"], version["id"]]
    page = (await rest.get("/v1/projects/demo/versions", params={"page_size": 1})).json()
    assert len(page["versions"]) == 1 and page["next_page_token"]
    rest_page = (
        await rest.get("/v1/projects/demo/versions", params={"page_size": 1, "page_token": page["next_page_token"]})
    ).json()
    assert [v["id"] for v in rest_page["versions"]] == [version["id"]]
    # Tokens this server never hands out: a digit that int() refuses, and one past a bigint.
    for token in ("\u00b2", "9" * 32, "-1"):
        refused = await rest.get("/v1/projects/demo/versions", params={"page_token": token})
        assert refused.status_code == 422, (token, refused.text)

    fetched = (await rest.get(f"/v1/projects/demo/versions/{version['id']}")).json()
    assert fetched["files"] == [e.model_dump() for e in entries]
    hello = next(e for e in entries if e.path == "hello.py")
    blob = await rest.get(f"/v1/projects/demo/blobs/{hello.sha256}")
    assert (blob.status_code, blob.content) == (200, b"print('hello')\n")
    assert (await rest.get(f"/v1/projects/demo/versions/{'0' * 64}")).status_code == 404
    assert (await rest.get("/v1/projects/nope/versions")).status_code == 404
    assert (await rest.get(f"/v1/projects/demo/blobs/{'1' * 64}")).status_code == 404


async def test_grpc_push_with_the_sdk_uploads_only_what_changed(stack: Stack, tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", files=12)
    cache = tmp_path / "cache"
    first = await sdk_push(stack.grpc_target, root, cache)
    assert (first.uploaded_files, first.total_files) == (14, 14)
    assert first.uploaded_bytes == first.total_bytes > 0
    unchanged = await sdk_push(stack.grpc_target, root, cache)
    assert (unchanged.uploaded_files, unchanged.uploaded_bytes) == (0, 0)
    assert unchanged.version.id == first.version.id
    with (root / "src" / "m3.py").open("a") as f:
        f.write("EXTRA = 1\n")
    changed = await sdk_push(stack.grpc_target, root, cache)
    assert changed.uploaded_files == 1
    assert changed.version.id != first.version.id

    client = Grpc(stack.grpc_target)
    try:
        got = await client.stub.GetProjectVersion(
            ame_service_pb2.GetProjectVersionRequest(project="demo", version_id=changed.version.id)
        )
        assert got.version.file_count == 14
        m3 = next(f for f in got.files if f.path == "src/m3.py")
        chunks = [
            part.chunk
            async for part in client.stub.DownloadBlob(
                ame_service_pb2.DownloadBlobRequest(project="demo", sha256=m3.sha256)
            )
        ]
        assert b"".join(chunks) == (root / "src" / "m3.py").read_bytes()
        listed = await client.stub.ListProjectVersions(ame_service_pb2.ListProjectVersionsRequest(project="demo"))
        assert [v.id for v in listed.versions] == [changed.version.id, first.version.id]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.stub.ListProjectVersions(
                ame_service_pb2.ListProjectVersionsRequest(organisation="someone-else", project="demo")
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await client.close()


async def test_a_blob_whose_bytes_do_not_match_is_refused(rest: httpx.AsyncClient, client: Grpc) -> None:
    claimed = sha(b"the real bytes")
    bad = await rest.put(f"/v1/projects/demo/blobs/{claimed}", content=b"the fake bytes")
    assert bad.status_code == 422
    assert "sha256" in bad.json()["error"]
    short = await rest.put(f"/v1/projects/demo/blobs/{claimed}", content=b"short")
    assert short.status_code == 422
    entry = {"path": "x", "mode": 0o100644, "sha256": claimed, "size": 14}
    missing = await rest.post("/v1/projects/demo/missing-blobs", json={"files": [entry]})
    assert missing.json() == {"missing": [claimed]}

    async def parts() -> AsyncIterator[ame_service_pb2.UploadBlobRequest]:
        yield ame_service_pb2.UploadBlobRequest(
            header=ame_service_pb2.BlobHeader(project="demo", sha256=claimed, size=14)
        )
        yield ame_service_pb2.UploadBlobRequest(chunk=b"the fake bytes")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.stub.UploadBlob(parts())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sha256" in (caught.value.details() or "")


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x", "a//b"])
async def test_paths_that_escape_the_project_are_refused(rest: httpx.AsyncClient, client: Grpc, path: str) -> None:
    entry = {"path": path, "mode": 0o100644, "sha256": sha(b"x"), "size": 1}
    for route in ("missing-blobs", "versions"):
        response = await rest.post(f"/v1/projects/demo/{route}", json={"files": [entry]})
        assert response.status_code == 422, response.text
        assert "path" in response.json()["error"]
    pb = project_pb2.ManifestEntry(path=path, mode=0o100644, sha256=sha(b"x"), size=1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.stub.CommitProjectVersion(ame_service_pb2.CommitProjectVersionRequest(project="demo", files=[pb]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_symlink_pointing_out_of_the_project_is_refused(rest: httpx.AsyncClient, tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    entries = [e.model_dump() for e in manifest_of(root)]
    target = b"../../etc/passwd"
    link = {"path": "src/link", "mode": MODE_SYMLINK, "sha256": sha(target), "size": len(target)}
    await rest_push(rest, root)
    assert (await rest.put(f"/v1/projects/demo/blobs/{sha(target)}", content=target)).status_code == 201
    response = await rest.post("/v1/projects/demo/versions", json={"files": [*entries, link]})
    assert response.status_code == 422
    assert "points out of the project" in response.json()["error"]


async def test_over_the_size_limit_is_413_naming_the_limit(rest: httpx.AsyncClient, client: Grpc) -> None:
    huge = {"path": "model.bin", "mode": 0o100644, "sha256": sha(b"x"), "size": 6 * 1024**3}
    response = await rest.post("/v1/projects/demo/missing-blobs", json={"files": [huge]})
    assert response.status_code == 413
    assert "limit of 5368709120 bytes (AME_API_PROJECT_MAX_BYTES)" in response.json()["error"]
    assert (await rest.post("/v1/projects/demo/versions", json={"files": [huge]})).status_code == 413
    # A 6 GiB upload is answered before its body is read; httpx will not send a short body, so speak HTTP.
    host, port = rest.base_url.host, rest.base_url.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"PUT /v1/projects/demo/blobs/{sha(b'x')} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: {rest.headers['Authorization']}\r\n"
        f"Content-Length: {6 * 1024**3}\r\n\r\nxxxx".encode()
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=10)
    writer.close()
    assert status_line.split()[1] == b"413"
    pb = project_pb2.ManifestEntry(path="model.bin", mode=0o100644, sha256=sha(b"x"), size=6 * 1024**3)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.stub.FindMissingBlobs(ame_service_pb2.FindMissingBlobsRequest(project="demo", files=[pb]))
    assert "AME_API_PROJECT_MAX_BYTES" in (caught.value.details() or "")


async def test_an_upload_cut_off_halfway_leaves_no_version_and_a_retry_completes_it(
    rest: httpx.AsyncClient, stack: Stack, tmp_path: Path
) -> None:
    root = make_project(tmp_path / "p")
    big = root / "data.bin"
    big.write_bytes(bytes(range(256)) * 8192)  # 2 MiB
    entries = manifest_of(root)
    for entry in entries:
        if entry.path != "data.bin":
            data = (root / entry.path).read_bytes()
            assert (await rest.put(f"/v1/projects/demo/blobs/{entry.sha256}", content=data)).status_code == 201
    digest = sha(big.read_bytes())

    class CutOff(Exception):
        pass

    async def half() -> AsyncIterator[bytes]:
        yield big.read_bytes()[: 1024 * 1024]
        raise CutOff

    with pytest.raises(CutOff):
        await rest.put(
            f"/v1/projects/demo/blobs/{digest}", content=half(), headers={"content-length": str(big.stat().st_size)}
        )
    commit = await rest.post("/v1/projects/demo/versions", json=as_json(entries))
    assert commit.status_code == 409
    assert "data.bin" in commit.json()["error"]
    assert (await rest.get("/v1/projects/demo/versions")).status_code == 404  # not even the project was created
    missing = await rest.post("/v1/projects/demo/missing-blobs", json=as_json(entries))
    assert missing.json() == {"missing": [digest]}

    assert (await rest.put(f"/v1/projects/demo/blobs/{digest}", content=big.read_bytes())).status_code == 201
    commit = await rest.post("/v1/projects/demo/versions", json=as_json(entries))
    assert commit.status_code == 201
    blob = await rest.get(f"/v1/projects/demo/blobs/{digest}")
    assert blob.content == big.read_bytes()


async def test_two_clients_pushing_at_once_both_succeed(stack: Stack, rest: httpx.AsyncClient, tmp_path: Path) -> None:
    same = [make_project(tmp_path / f"same{i}", files=30) for i in range(2)]
    first, second = await asyncio.gather(
        sdk_push(stack.grpc_target, same[0], tmp_path / "c0"), sdk_push(stack.grpc_target, same[1], tmp_path / "c1")
    )
    assert first.version.id == second.version.id
    different = make_project(tmp_path / "other", files=31)
    third, fourth = await asyncio.gather(
        sdk_push(stack.grpc_target, different, tmp_path / "c2"), sdk_push(stack.grpc_target, same[0], tmp_path / "c3")
    )
    assert third.version.id != fourth.version.id == first.version.id
    listed = (await rest.get("/v1/projects/demo/versions")).json()["versions"]
    assert sorted(v["id"] for v in listed) == sorted({first.version.id, third.version.id})


async def test_an_invalid_ame_yml_is_refused_with_the_validate_messages(
    rest: httpx.AsyncClient, client: Grpc, tmp_path: Path
) -> None:
    root = make_project(tmp_path / "p")
    text = "project: demo\ntasks:\n  - name: hello\n    executor: !custom\n      comand: python hello.py\n"
    (root / "ame.yml").write_text(text)
    with pytest.raises(SpecError) as local:
        load_project_text(text, "ame.yml")
    expected = [str(p) for p in local.value.problems]
    assert expected[0].startswith("ame.yml:4:")

    response = await rest_push(rest, root)
    assert response.status_code == 422
    assert response.json()["problems"] == expected
    assert response.json()["error"] == "\n".join(expected)

    files = [project_pb2.ManifestEntry(**e.model_dump()) for e in manifest_of(root)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.stub.CommitProjectVersion(ame_service_pb2.CommitProjectVersionRequest(project="demo", files=files))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "\n".join(expected)

    (root / "ame.yml").unlink()
    no_file = await rest_push(rest, root)
    assert no_file.status_code == 422
    assert "no ame.yml" in no_file.json()["error"]


async def test_a_manifest_with_unknown_fields_is_refused(rest: httpx.AsyncClient) -> None:
    entry = {"path": "a", "mode": 0o100644, "sha256": sha(b"a"), "size": 1, "owner": "root"}
    response = await rest.post("/v1/projects/demo/missing-blobs", json={"files": [entry]})
    assert response.status_code == 422
    assert (await rest.post("/v1/projects/demo/missing-blobs", json={"files": [], "x": 1})).status_code == 422
    assert (await rest.post("/v1/projects/demo/missing-blobs", content=b"{not json")).status_code == 422
    assert (await rest.post("/v1/projects/bad name/missing-blobs", json={"files": []})).status_code == 422


async def test_a_new_version_is_announced_on_the_bus(rest: httpx.AsyncClient, stack: Stack, tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    version = (await rest_push(rest, root)).json()
    names = stack.runtime.names
    message = await stack.runtime.js.get_last_msg(names.events_stream, names.project_version_created)
    event = project_pb2.ProjectVersionCreated.FromString(message.data or b"")
    assert (event.version.id, event.project.name, event.project.organisation) == (version["id"], "demo", "default")
    assert message.headers is not None
    assert message.headers.get("Nats-Msg-Id") == f"project:{event.project.id}:{version['id']}"
    assert json.loads(json.dumps(version))["file_count"] == event.version.file_count


async def test_a_page_token_never_handed_out_is_invalid_over_grpc(client: Grpc) -> None:
    for token in ("\u00b2", "9" * 32):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.stub.ListProjectVersions(
                ame_service_pb2.ListProjectVersionsRequest(project="demo", page_token=token)
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, token


async def test_hostile_strings_over_grpc_are_refused_not_internal_errors(
    client: Grpc, rest: httpx.AsyncClient, tmp_path: Path
) -> None:
    assert (await rest_push(rest, make_project(tmp_path / "p"))).status_code == 201
    refused = [
        client.stub.ListProjectVersions(ame_service_pb2.ListProjectVersionsRequest(project="demo\x00")),
        client.stub.FindMissingBlobs(ame_service_pb2.FindMissingBlobsRequest(project="x" * 201)),
        client.stub.DownloadBlob(ame_service_pb2.DownloadBlobRequest(project="demo", sha256="\x00" * 64)).read(),
    ]
    for call in refused:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.stub.GetProjectVersion(
            ame_service_pb2.GetProjectVersionRequest(project="demo", version_id="v\x00" * 10)
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_grpc_upload_cut_off_halfway_stores_nothing_and_a_retry_completes_it(client: Grpc) -> None:
    data = bytes(range(256)) * 8192
    digest = sha(data)

    # The client goes away after half the bytes (the call is cancelled, as when the process dies).
    call = client.stub.UploadBlob()
    await call.write(
        ame_service_pb2.UploadBlobRequest(
            header=ame_service_pb2.BlobHeader(project="demo", sha256=digest, size=len(data))
        )
    )
    await call.write(ame_service_pb2.UploadBlobRequest(chunk=data[: len(data) // 2]))
    assert call.cancel()
    entry = project_pb2.ManifestEntry(path="data.bin", mode=0o100644, sha256=digest, size=len(data))
    missing = await client.stub.FindMissingBlobs(ame_service_pb2.FindMissingBlobsRequest(project="demo", files=[entry]))
    assert list(missing.missing_sha256) == [digest]

    async def whole() -> AsyncIterator[ame_service_pb2.UploadBlobRequest]:
        yield ame_service_pb2.UploadBlobRequest(
            header=ame_service_pb2.BlobHeader(project="demo", sha256=digest, size=len(data))
        )
        for start in range(0, len(data), 1024 * 1024):
            yield ame_service_pb2.UploadBlobRequest(chunk=data[start : start + 1024 * 1024])

    stored = await client.stub.UploadBlob(whole())
    assert (stored.sha256, stored.size, stored.created) == (digest, len(data), True)
    missing = await client.stub.FindMissingBlobs(ame_service_pb2.FindMissingBlobsRequest(project="demo", files=[entry]))
    assert list(missing.missing_sha256) == []
