"""What a webhook delivery costs on the embedded server: time to the answer for each kind of delivery.

Starts `ame server` (free ports, temporary home) with the per-hook rate limit lifted, pushes a project whose task
has a webhook (`ame project push`), stores its secret, then times N sequential deliveries of each kind over one
connection:

- a new signed delivery (GitHub style): verified, run recorded and admitted, 202 with a new run;
- a redelivery of one delivery id: verified, the earlier run found, 202 with it;
- a refused delivery with a bad signature at the hook, and one at an unknown hook (both the same 401).

    uv run python bench/bench_webhooks.py [--calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from embedded import ServerDidNotStart, embedded_server, server_token

SECRET = "bench-hook-secret"
AME_YML = """\
project: bench
tasks:
  - name: hook
    executor: !custom
      command: 'true'
    triggers:
      webhook: {secret: BENCH_HOOK}
"""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] * 1000


async def timed(name: str, calls: int, call: Callable[[int], Awaitable[httpx.Response]], status: int) -> None:
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        response = await call(i)
        samples.append(time.perf_counter() - started)
        assert response.status_code == status, (name, response.status_code, response.text)
    print(f"{name:44} p50 {pct(samples, 50):6.2f} ms   p95 {pct(samples, 95):6.2f} ms   (n={calls})")


def signed(body: bytes, delivery: str, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": delivery}


async def measure(info: dict[str, str], calls: int) -> None:
    token = server_token(info)
    body = json.dumps({"ref": "refs/heads/main", "after": "0" * 40}).encode()
    async with httpx.AsyncClient(base_url=info["rest_url"], timeout=60) as rest:
        put = await rest.put(
            "/v1/secrets/BENCH_HOOK", json={"value": SECRET}, headers={"Authorization": f"Bearer {token}"}
        )
        assert put.status_code in (200, 201), put.text
        url = "/v1/hooks/default/bench/hook"
        for i in range(10):  # warm-up
            await rest.post(url, content=body, headers=signed(body, f"warm-{i}"))
        await timed(
            "new signed delivery (202, a new run)",
            calls,
            lambda i: rest.post(url, content=body, headers=signed(body, f"new-{i}")),
            202,
        )
        await timed(
            "redelivery (202, the same run)",
            calls,
            lambda i: rest.post(url, content=body, headers=signed(body, "new-0")),
            202,
        )
        await timed(
            "bad signature (401)",
            calls,
            lambda i: rest.post(url, content=body, headers=signed(body, f"bad-{i}", secret="guess")),
            401,
        )
        await timed(
            "unknown hook (401)",
            calls,
            lambda i: rest.post("/v1/hooks/default/bench/nope", content=body, headers=signed(body, f"x-{i}")),
            401,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ame-bench-hooks-") as home, tempfile.TemporaryDirectory() as project:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AME_")} | {
            "AME_WEBHOOKS_RATE": "1000000",
            "AME_WEBHOOKS_BURST": "1000000",
        }
        (Path(project) / "ame.yml").write_text(AME_YML)
        try:
            with embedded_server(Path(home), env, stop_timeout=120) as info:
                pushed = subprocess.run(
                    [sys.executable, "-m", "ame.cli.main", "project", "push"],
                    cwd=project,
                    env=env | {"AME_HOME": home},
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                if pushed.returncode != 0:
                    print(pushed.stderr, file=sys.stderr)
                    return 1
                print(f"machine: {os.cpu_count()} cores; embedded server")
                asyncio.run(measure(info, args.calls))
        except ServerDidNotStart as exc:
            print(exc, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
