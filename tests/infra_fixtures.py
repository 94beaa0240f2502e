"""Real infrastructure for tests: nats-server, PostgreSQL and an S3 server, once per session.

Loaded as a pytest plugin by the root conftest. Each server starts on a free port the first time a test
asks for it and stops when the session ends. Tests are isolated by naming, not by wiping: every test
gets its own database (`pg_dsn`), bus namespace (`bus_prefix`) and bucket (`s3_settings`).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aioboto3
import pytest
import pytest_asyncio
from moto.server import ThreadedMotoServer
from pydantic import SecretStr

from ame_platform.embedded import EmbeddedNats, EmbeddedPostgres
from ame_platform.storage import LocalObjectStore, ObjectStore, S3ObjectStore, StorageSettings


@pytest.fixture(scope="session")
def infra_dir() -> Iterator[Path]:
    """Session directory for server data, removed at the end.

    Not under pytest's tmp_path_factory: PostgreSQL runs as an unprivileged user when the tests run as
    root and must traverse the path, while pytest keeps its base temp dir private (and re-tightens its
    mode at every session start, under any concurrently running session).
    """
    path = Path(tempfile.mkdtemp(prefix="ame-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# JetStream reserves each stream's max_bytes on disk when the stream is created, and the session's nats-server
# serves hundreds of test stacks: with the production cap (1 GiB per LOGS stream) it runs out of reservable
# storage part-way through the suite. Every NatsSettings a test builds, in this process or in the processes it
# starts, reads this instead; the chattiest test (100,000 lines) needs well under it.
TEST_LOGS_MAX_BYTES = 64 * 1024 * 1024


@pytest.fixture(scope="session", autouse=True)
def _small_logs_streams() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AME_NATS_LOGS_MAX_BYTES", str(TEST_LOGS_MAX_BYTES))
        yield


# The token every test client sends by default: each api a test starts accepts it as its bootstrap server-admin
# token (AME_API_BOOTSTRAP_TOKEN, read by every ApiSettings, in this process and in the processes tests start),
# and the CLI and SDK send it (AME_TOKEN). Tests that need other tokens create them through the API with it.
TEST_TOKEN = f"ame_test_{uuid.uuid4().hex}"


@pytest.fixture(scope="session", autouse=True)
def _test_token(infra_dir: Path) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AME_API_BOOTSTRAP_TOKEN", TEST_TOKEN)
        patch.setenv("AME_TOKEN", TEST_TOKEN)
        # Never the user's own `ame setup`/`ame login`: a test sees only what it saves itself.
        patch.setenv("AME_CONFIG_DIR", str(infra_dir / "config"))
        yield


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def nats_server(infra_dir: Path) -> AsyncIterator[EmbeddedNats]:
    """A nats-server with JetStream for the whole session; tests namespace their streams with `bus_prefix`."""
    async with EmbeddedNats(infra_dir / "nats") as server:
        yield server


@pytest.fixture(scope="session")
def nats_url(nats_server: EmbeddedNats) -> str:
    return nats_server.url


@pytest.fixture
def bus_prefix() -> str:
    """A unique lowercase namespace (e.g. `t1a2b3c4d`) for one test's streams, subjects and consumers."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def postgres_server(infra_dir: Path) -> AsyncIterator[EmbeddedPostgres]:
    """PostgreSQL for the whole session, without fsync; tests use `pg_dsn` rather than its own database."""
    async with EmbeddedPostgres(infra_dir / "postgres", fast_unsafe=True) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="session")
async def pg_dsn(postgres_server: EmbeddedPostgres) -> AsyncIterator[str]:
    """DSN of a fresh, empty database that only this test uses; dropped (connections and all) afterwards."""
    name = f"t_{uuid.uuid4().hex}"
    dsn = await postgres_server.create_database(name)
    yield dsn
    await postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint URL of an in-process moto S3 server; any credentials are accepted."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_settings(s3_server: str) -> StorageSettings:
    """S3 storage settings pointing at `s3_server`, with a bucket of this test's own (created on open)."""
    return StorageSettings(
        backend="s3",
        s3_endpoint_url=s3_server,
        s3_bucket=f"t-{uuid.uuid4().hex[:12]}",
        s3_region="us-east-1",
        s3_access_key_id="testing",
        s3_secret_access_key=SecretStr("testing"),
        s3_create_bucket=True,
        s3_addressing_style="path",
    )


@pytest.fixture(scope="session")
def aioboto3_session() -> aioboto3.Session:
    """One aioboto3 session for the run: it caches botocore's service models, which cost ~0.4 s to load."""
    return aioboto3.Session()


@pytest_asyncio.fixture(loop_scope="session", params=["local", "s3"])
async def object_store(
    request: pytest.FixtureRequest, tmp_path: Path, aioboto3_session: aioboto3.Session
) -> AsyncIterator[ObjectStore]:
    """Each adapter in turn, empty, for tests that must hold for every ObjectStore."""
    if request.param == "local":
        yield LocalObjectStore(tmp_path / "objects")
        return
    settings: StorageSettings = request.getfixturevalue("s3_settings")
    async with S3ObjectStore.open(settings, session=aioboto3_session) as store:
        yield store
