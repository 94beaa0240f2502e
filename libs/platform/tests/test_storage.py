from __future__ import annotations

import os
from datetime import UTC
from pathlib import Path

import aioboto3
import pytest
from pydantic import SecretStr, ValidationError

from ame_platform.storage import (
    InvalidKeyError,
    LocalObjectStore,
    ObjectNotFound,
    ObjectStore,
    S3ObjectStore,
    StorageSettings,
    open_object_store,
)

_BAD_KEYS = [
    "",
    "/abs",
    "a/../b",
    "..",
    ".",
    "a//b",
    "a/",
    "a/./b",
    "back\\slash",
    "nul\x00",
    "x.ame-partial",
]


async def test_bytes_round_trip_and_overwrite(object_store: ObjectStore) -> None:
    await object_store.put_bytes("runs/1/out.txt", b"first", content_type="text/plain")
    await object_store.put_bytes("runs/1/out.txt", b"second")
    assert await object_store.get_bytes("runs/1/out.txt") == b"second"
    assert await object_store.exists("runs/1/out.txt")


async def test_file_round_trip(object_store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"\x00\x01" * 1000)
    await object_store.put_file("artifacts/model.bin", source)
    dest = tmp_path / "nested" / "dest.bin"
    await object_store.get_file("artifacts/model.bin", dest)
    assert dest.read_bytes() == source.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["dest.bin"]


async def test_list_by_prefix(object_store: ObjectStore) -> None:
    for key in ["b/4", "a/2", "a/1", "ab/3", "a/deep/5"]:
        await object_store.put_bytes(key, key.encode())

    assert [info.key for info in await object_store.list("a/")] == ["a/1", "a/2", "a/deep/5"]
    assert [info.key for info in await object_store.list("a")] == ["a/1", "a/2", "a/deep/5", "ab/3"]
    assert [info.key for info in await object_store.list()] == ["a/1", "a/2", "a/deep/5", "ab/3", "b/4"]
    assert await object_store.list("missing/") == []
    info = (await object_store.list("b/"))[0]
    assert info.size == 3
    assert info.modified.tzinfo is not None
    assert info.modified.utcoffset() == UTC.utcoffset(None)


async def test_missing_key(object_store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound) as raised:
        await object_store.get_bytes("no/such/key")
    assert raised.value.key == "no/such/key"
    assert not await object_store.exists("no/such/key")

    dest = tmp_path / "dest"
    dest.write_bytes(b"keep me")
    with pytest.raises(ObjectNotFound):
        await object_store.get_file("no/such/key", dest)
    assert dest.read_bytes() == b"keep me"
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".ame-partial")]


async def test_delete(object_store: ObjectStore) -> None:
    await object_store.put_bytes("gone/soon", b"x")
    await object_store.delete("gone/soon")
    assert not await object_store.exists("gone/soon")
    await object_store.delete("gone/soon")  # deleting a missing key is not an error, as in S3


@pytest.mark.parametrize("key", _BAD_KEYS)
async def test_bad_keys_are_refused(object_store: ObjectStore, key: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidKeyError):
        await object_store.put_bytes(key, b"x")
    with pytest.raises(InvalidKeyError):
        await object_store.get_bytes(key)
    with pytest.raises(InvalidKeyError):
        await object_store.exists(key)
    with pytest.raises(InvalidKeyError):
        await object_store.delete(key)
    with pytest.raises(InvalidKeyError):
        await object_store.get_file(key, tmp_path / "dest")


async def test_bad_list_prefix_is_refused(object_store: ObjectStore) -> None:
    with pytest.raises(InvalidKeyError):
        await object_store.list("../")


async def test_large_file_round_trip(object_store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "large.bin"
    source.write_bytes(os.urandom(9 * 1024 * 1024))  # above the 8 MiB multipart threshold
    await object_store.put_file("big/blob", source)
    dest = tmp_path / "large.out"
    await object_store.get_file("big/blob", dest)
    assert dest.read_bytes() == source.read_bytes()
    assert (await object_store.list("big/"))[0].size == 9 * 1024 * 1024


async def test_s3_uploads_large_files_in_parts(
    s3_settings: StorageSettings, aioboto3_session: aioboto3.Session, tmp_path: Path
) -> None:
    source = tmp_path / "large.bin"
    source.write_bytes(os.urandom(9 * 1024 * 1024))
    async with S3ObjectStore.open(s3_settings, session=aioboto3_session) as store:
        await store.put_file("big/blob", source)

    secret = s3_settings.s3_secret_access_key
    assert secret is not None
    async with aioboto3_session.client(
        "s3",
        endpoint_url=s3_settings.s3_endpoint_url,
        region_name=s3_settings.s3_region,
        aws_access_key_id=s3_settings.s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value(),
    ) as client:
        head = await client.head_object(Bucket=s3_settings.s3_bucket, Key="big/blob")
    # A multipart object's ETag is "<md5 of part md5s>-<part count>".
    assert head["ETag"].strip('"').endswith("-2")


async def test_local_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    with pytest.raises(FileNotFoundError):
        await store.put_file("a/b", tmp_path / "does-not-exist")
    assert await store.list() == []
    assert list((tmp_path / "objects" / "a").iterdir()) == []


async def test_open_object_store_picks_the_backend(s3_settings: StorageSettings, tmp_path: Path) -> None:
    async with open_object_store(StorageSettings(backend="local", local_root=tmp_path)) as store:
        assert isinstance(store, LocalObjectStore)
    async with open_object_store(s3_settings) as store:
        assert isinstance(store, S3ObjectStore)
        await store.put_bytes("k", b"v")
        assert await store.get_bytes("k") == b"v"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AME_STORAGE_BACKEND", "s3")
    monkeypatch.setenv("AME_STORAGE_S3_BUCKET", "artifacts")
    monkeypatch.setenv("AME_STORAGE_S3_ACCESS_KEY_ID", "AKIA123")
    monkeypatch.setenv("AME_STORAGE_S3_SECRET_ACCESS_KEY", "s3cr3t-value")
    settings = StorageSettings()
    assert settings.backend == "s3"
    assert settings.s3_bucket == "artifacts"
    assert "s3cr3t-value" not in repr(settings)


@pytest.mark.parametrize(
    ("key_id", "secret"), [("AKIA123", None), (None, SecretStr("x")), ("AKIA123", SecretStr("changethis"))]
)
def test_settings_refuse_incomplete_or_placeholder_credentials(key_id: str | None, secret: SecretStr | None) -> None:
    with pytest.raises(ValidationError):
        StorageSettings(backend="s3", s3_access_key_id=key_id, s3_secret_access_key=secret)
