"""Infrastructure of the fault tests: servers each test owns, because it stops and starts them."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from ame_platform.embedded import EmbeddedNats, EmbeddedPostgres, NatsCluster
from tests.fault.services import ServiceStack, StackFactory, service_env


@pytest.fixture
def fault_dir() -> Iterator[Path]:
    """This test's directory for server data, logs and the side-effect file.

    Not pytest's tmp_path: PostgreSQL runs as an unprivileged user when the tests run as root and must
    traverse the path (see `infra_dir`).
    """
    path = Path(tempfile.mkdtemp(prefix="ame-fault-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest_asyncio.fixture(loop_scope="session")
async def restartable_nats(fault_dir: Path) -> AsyncIterator[EmbeddedNats]:
    """A nats-server of this test's own, to stop and start again on the same port and store."""
    async with EmbeddedNats(fault_dir / "nats") as server:
        yield server


@pytest_asyncio.fixture(loop_scope="session")
async def restartable_postgres(fault_dir: Path) -> AsyncIterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, to stop and start again on the same port and data dir."""
    async with EmbeddedPostgres(fault_dir / "postgres", fast_unsafe=True) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="session")
async def nats_cluster(fault_dir: Path) -> AsyncIterator[NatsCluster]:
    """Three clustered nats-servers on loopback, JetStream on every node."""
    async with NatsCluster(fault_dir / "cluster", size=3) as cluster:
        yield cluster


@pytest_asyncio.fixture(loop_scope="session")
async def service_stack(fault_dir: Path, tmp_path: Path) -> AsyncIterator[StackFactory]:
    """Starts the services as processes against the given bus and database; stops them after the test.

    Their logs are copied to the test's tmp_path (pytest keeps the last few runs' there) for a post-mortem.
    """
    stacks: list[ServiceStack] = []

    async def start(*, nats_url: str, dsn: str, replicas: int = 1) -> ServiceStack:
        env = service_env(
            nats_url=nats_url, prefix=f"f{uuid.uuid4().hex[:8]}", dsn=dsn, work_dir=fault_dir, replicas=replicas
        )
        stack = ServiceStack(env, fault_dir / "logs")
        stacks.append(stack)
        await stack.start()
        return stack

    yield start
    for stack in stacks:
        await stack.stop()
        if stack.log_dir.exists():
            kept = tmp_path / "service-logs"
            shutil.copytree(stack.log_dir, kept, dirs_exist_ok=True)
            print(f"service logs: {kept}")
