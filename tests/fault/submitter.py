"""A stream of REST submissions that behaves like a careful client: every submission carries its own
Idempotency-Key, and on a connection error, a timeout or a 503 it is sent again with the same key until it is
accepted or the deadline passes. Everything it sees is recorded for the assertions and the report."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from ame.sdk.credentials import bearer, discover_token

_BACKOFF_START = 0.05
_BACKOFF_MAX = 1.0
_RETRY_AFTER_MAX = 2.0


@dataclass
class Ledger:
    """What the client saw, per attempt and per submission."""

    keys: list[str] = field(default_factory=list)
    accepted: dict[str, str] = field(default_factory=dict)  # idempotency key -> run id
    answers: Counter[int] = field(default_factory=Counter)  # HTTP status -> attempts answered with it
    transport_errors: Counter[str] = field(default_factory=Counter)  # exception class -> attempts
    # An answer other than 2xx or 503: (key, status, start of the body).
    bad_answers: list[tuple[str, int, str]] = field(default_factory=list)
    retried: set[str] = field(default_factory=set)  # keys that needed more than one attempt
    attempts: int = 0
    refused: int = 0  # attempts not accepted (any reason); the fault injector watches this
    elapsed: float = 0.0

    @property
    def unaccepted(self) -> list[str]:
        return [key for key in self.keys if key not in self.accepted]

    def summary(self) -> dict[str, object]:
        return {
            "submissions": len(self.keys),
            "accepted": len(self.accepted),
            "never_accepted": len(self.unaccepted),
            "attempts": self.attempts,
            "retried_submissions": len(self.retried),
            "answers_by_status": dict(sorted(self.answers.items())),
            "transport_errors": dict(self.transport_errors),
            "bad_answers": len(self.bad_answers),
            "submit_seconds": round(self.elapsed, 1),
        }


class Submitter:
    """Submits `count` runs of `command` with `concurrency` requests in flight; `run()` returns when every
    submission is accepted, `deadline` seconds have passed, or `give_up()` says the test has failed already
    (a service exited: retrying until the deadline would only spend CI time)."""

    def __init__(
        self,
        base_url: str,
        command: str,
        *,
        count: int,
        concurrency: int,
        deadline: float,
        request_timeout: float,
        give_up: Callable[[], bool] = lambda: False,
    ) -> None:
        self._give_up = give_up
        self._base_url = base_url
        self._command = command
        self._count = count
        self._concurrency = concurrency
        self._deadline = deadline
        self._request_timeout = request_timeout
        self.ledger = Ledger(keys=[f"fault-{uuid.uuid4()}" for _ in range(count)])
        self.done = False

    async def run(self) -> Ledger:
        started = time.monotonic()
        deadline = started + self._deadline
        queue: asyncio.Queue[str] = asyncio.Queue()
        for key in self.ledger.keys:
            queue.put_nowait(key)
        # One client per worker, each keeping its own keep-alive connection, as independent callers would.
        try:
            await asyncio.gather(*(self._worker(queue, deadline) for _ in range(self._concurrency)))
        finally:
            self.ledger.elapsed = time.monotonic() - started
            self.done = True
        return self.ledger

    async def _worker(self, queue: asyncio.Queue[str], deadline: float) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(
            base_url=self._base_url,
            timeout=self._request_timeout,
            limits=limits,
            headers=bearer(discover_token()),
        ) as client:
            while not queue.empty() and not self._give_up():
                key = queue.get_nowait()
                await self._submit(client, key, deadline)

    async def _submit(self, client: httpx.AsyncClient, key: str, deadline: float) -> None:
        backoff = _BACKOFF_START
        attempt = 0
        body = {"command": self._command}
        while time.monotonic() < deadline and not self._give_up():
            attempt += 1
            if attempt > 1:
                self.ledger.retried.add(key)
            self.ledger.attempts += 1
            wait = backoff
            try:
                response = await client.post("/v1/runs", json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError as exc:
                self.ledger.transport_errors[type(exc).__name__] += 1
            else:
                self.ledger.answers[response.status_code] += 1
                if response.is_success:
                    self.ledger.accepted[key] = str(response.json()["id"])
                    return
                if response.status_code == 503:
                    wait = _retry_after(response, backoff)
                else:
                    # Not an answer a client should get under a fault; recorded, and retried with the same key
                    # so the test still measures whether the run is lost or doubled.
                    self.ledger.bad_answers.append((key, response.status_code, response.text[:300]))
            self.ledger.refused += 1
            await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))  # client backoff, not a sync
            backoff = min(backoff * 2, _BACKOFF_MAX)


def _retry_after(response: httpx.Response, fallback: float) -> float:
    try:
        return min(float(response.headers["Retry-After"]), _RETRY_AFTER_MAX)
    except (KeyError, ValueError):
        return fallback
