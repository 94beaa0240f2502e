"""Object store on an S3-compatible bucket through aioboto3."""

from __future__ import annotations

import builtins
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC
from pathlib import Path
from typing import Any, Self, cast

import aioboto3
from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from ame.storage.port import (
    PARTIAL_SUFFIX,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    validate_key,
    validate_prefix,
)
from ame_platform.storage.settings import StorageSettings

_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class S3ObjectStore:
    """Objects in one bucket, through a single aioboto3 client opened by `S3ObjectStore.open(settings)`."""

    def __init__(self, client: Any, bucket: str, transfer_config: TransferConfig) -> None:
        """Prefer `open()`; this takes an already entered aioboto3 S3 client, which the caller closes."""
        self._client = client
        self.bucket = bucket
        self._transfer_config = transfer_config

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, settings: StorageSettings, session: Any = None) -> AsyncIterator[Self]:
        """Enter the S3 client once for the store's lifetime; create the bucket if the settings ask.

        Pass an `aioboto3.Session` to share it: a session caches botocore's parsed service models, which
        otherwise cost a few hundred milliseconds per client.
        """
        secret = settings.s3_secret_access_key
        session = session if session is not None else aioboto3.Session()
        client_context = session.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret is not None else None,
            config=AioConfig(s3={"addressing_style": settings.s3_addressing_style}),
        )
        transfer_config = TransferConfig(
            multipart_threshold=settings.s3_multipart_threshold,
            multipart_chunksize=settings.s3_multipart_chunksize,
        )
        async with client_context as client:
            store = cls(client, settings.s3_bucket, transfer_config)
            if settings.s3_create_bucket:
                await store.create_bucket_if_missing()
            yield store

    async def create_bucket_if_missing(self) -> None:
        try:
            await self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if _error_code(exc) not in _NOT_FOUND_CODES:
                raise
        region = self._client.meta.region_name
        # us-east-1 is the one region that rejects an explicit LocationConstraint.
        location = (
            {} if region in (None, "us-east-1") else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        )
        try:
            await self._client.create_bucket(Bucket=self.bucket, **location)
        except ClientError as exc:
            # Another replica created it between our HEAD and CREATE.
            if _error_code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise

    async def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        await self._client.put_object(Bucket=self.bucket, Key=validate_key(key), Body=data, **extra)

    async def put_file(self, key: str, path: Path) -> None:
        await self._client.upload_file(str(path), self.bucket, validate_key(key), Config=self._transfer_config)

    async def get_bytes(self, key: str) -> bytes:
        try:
            response = await self._client.get_object(Bucket=self.bucket, Key=validate_key(key))
        except ClientError as exc:
            raise _translate(exc, key) from None
        async with response["Body"] as body:
            return cast(bytes, await body.read())

    async def get_file(self, key: str, dest: Path) -> None:
        validate_key(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # aioboto3 writes straight into the file it is given (and creates it even for a missing key), so
        # download beside `dest` and rename, as the port promises.
        partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}{PARTIAL_SUFFIX}")
        try:
            await self._client.download_file(self.bucket, key, str(partial), Config=self._transfer_config)
            partial.replace(dest)
        except ClientError as exc:
            raise _translate(exc, key) from None
        finally:
            partial.unlink(missing_ok=True)

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        validate_prefix(prefix)
        paginator = self._client.get_paginator("list_objects_v2")
        found: builtins.list[ObjectInfo] = []
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                modified = item["LastModified"]
                found.append(ObjectInfo(item["Key"], int(item["Size"]), modified.astimezone(UTC)))
        return found  # S3 lists keys in UTF-8 binary order already

    async def presigned_get(self, key: str, expires_seconds: int) -> str:
        """A URL that reads this one object until it expires, with no other credential (a run pod's files)."""
        url = await self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": validate_key(key)}, ExpiresIn=expires_seconds
        )
        return str(url)

    async def presigned_post(self, prefix: str, expires_seconds: int) -> dict[str, Any]:
        """A form (`url`, `fields`) that uploads any object whose key starts with `prefix`, and nothing else, until
        it expires (a run pod's artifacts). The uploader adds the `key` field."""
        validate_prefix(prefix)
        form = await self._client.generate_presigned_post(
            Bucket=self.bucket,
            Key=prefix + "${filename}",
            Conditions=[["starts-with", "$key", prefix]],
            ExpiresIn=expires_seconds,
        )
        fields = {k: v for k, v in dict(form["fields"]).items() if k != "key"}
        return {"url": str(form["url"]), "fields": fields}

    async def delete(self, key: str) -> None:
        await self._client.delete_object(Bucket=self.bucket, Key=validate_key(key))

    async def exists(self, key: str) -> bool:
        try:
            await self._client.head_object(Bucket=self.bucket, Key=validate_key(key))
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND_CODES:
                return False
            raise
        return True


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _translate(exc: ClientError, key: str) -> StorageError | ClientError:
    if _error_code(exc) in _NOT_FOUND_CODES:
        return ObjectNotFound(key)
    return exc
