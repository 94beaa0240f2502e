"""What authenticating a call costs: the embedded server answering the same cheap call with and without a
token check.

Starts `ame server` (free ports, temporary data directory) with a bootstrap token in settings, then times N
sequential calls of each kind over one connection:

- gRPC health Check (public: the interceptor looks the method up and lets it through);
- gRPC WhoAmI with the bootstrap token (checked in memory, no database);
- gRPC WhoAmI with the server-admin token `ame server` wrote (looked up by hash in PostgreSQL, as every
  API token is on every call);
- REST /healthz (public) and REST /v1/whoami with the database token.

    uv run python bench/bench_auth.py [--calls 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import httpx
from embedded import ServerDidNotStart, embedded_server, server_token
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ame.contracts.api.v1 import ame_service_pb2, ame_service_pb2_grpc


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] * 1000


async def timed(name: str, calls: int, call: Callable[[], Awaitable[object]]) -> float:
    for _ in range(20):  # warm-up: connections, prepared statements
        await call()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    print(f"{name:44} p50 {pct(samples, 50):6.2f} ms   p95 {pct(samples, 95):6.2f} ms   (n={calls})")
    return pct(samples, 50)


async def measure(info: dict[str, str], bootstrap: str, calls: int) -> None:
    token = server_token(info)
    async with grpc.aio.insecure_channel(info["grpc_target"]) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        ame = ame_service_pb2_grpc.AmeServiceStub(channel)
        request = ame_service_pb2.WhoAmIRequest()
        public = await timed("gRPC health Check (public)", calls, lambda: health.Check(health_pb2.HealthCheckRequest()))
        memory = await timed(
            "gRPC WhoAmI, bootstrap token (no lookup)",
            calls,
            lambda: ame.WhoAmI(request, metadata=(("authorization", f"Bearer {bootstrap}"),)),
        )
        looked_up = await timed(
            "gRPC WhoAmI, API token (looked up by hash)",
            calls,
            lambda: ame.WhoAmI(request, metadata=(("authorization", f"Bearer {token}"),)),
        )
    async with httpx.AsyncClient(base_url=info["rest_url"]) as rest:
        rest_public = await timed("REST GET /healthz (public)", calls, lambda: rest.get("/healthz"))
        rest_token = await timed(
            "REST GET /v1/whoami, API token",
            calls,
            lambda: rest.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"}),
        )
    print(f"token lookup per call (gRPC, p50 difference): {looked_up - memory:.2f} ms")
    print(f"authenticated vs public call (gRPC, p50):      {looked_up - public:+.2f} ms")
    print(f"authenticated vs public call (REST, p50):      {rest_token - rest_public:+.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    bootstrap = f"ame_bench_{secrets.token_urlsafe(24)}"
    with tempfile.TemporaryDirectory(prefix="ame-bench-auth-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AME_")} | {"AME_API_BOOTSTRAP_TOKEN": bootstrap}
        try:
            with embedded_server(Path(home), env, stop_timeout=60) as info:
                print(f"machine: {os.cpu_count()} cores; embedded server")
                asyncio.run(measure(info, bootstrap, args.calls))
        except ServerDidNotStart as exc:
            print(exc, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
