"""Admission against real NATS and PostgreSQL: fairness across organisations, limits, loops, several replicas."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from click.testing import CliRunner, Result

from ame.cli.main import cli
from ame.contracts.api.v1 import ame_service_pb2, ame_service_pb2_grpc
from ame.domain.quotas import LoopLimits
from ame.sdk.credentials import aio_channel
from tests.integration.admission_support import admission_stack, submit
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "lost"}


async def _run(client: httpx.AsyncClient, run_id: object) -> dict[str, Any]:
    response = await client.get(f"/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _ended(client: httpx.AsyncClient, run_id: object, timeout: float = 60.0) -> dict[str, Any]:
    async def ended() -> dict[str, Any] | None:
        run = await _run(client, run_id)
        return run if run["state"] in TERMINAL else None

    return await wait_until(ended, timeout=timeout, interval=0.1, message=f"run {run_id} to end")


async def _set_limits(client: httpx.AsyncClient, org: str, **limits: object) -> dict[str, Any]:
    response = await client.put(f"/v1/orgs/{org}/limits", json=limits)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    # An end at the same instant as a start does not overlap it.
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = current = 0
    for _, step in points:
        current += step
        most = max(most, current)
    return most


@pytest.mark.slow
async def test_a_burst_of_one_organisation_does_not_delay_another_past_the_first_free_slot(
    nats_url: str, pg_dsn: str, bus_prefix: str, tmp_path: Path
) -> None:
    async with (
        admission_stack(
            nats_url=nats_url,
            pg_dsn=pg_dsn,
            bus_prefix=bus_prefix,
            work_dir=tmp_path,
            replicas=["orga", "orgb"],
            max_active=2,
        ) as st,
        st.client("orga") as a,
        st.client("orgb") as b,
    ):
        gate = asyncio.Semaphore(16)

        async def submit_a(i: int) -> dict[str, object]:
            async with gate:
                return await submit(a, "sleep 0.3", task=f"a{i}")

        a_runs = await asyncio.gather(*(submit_a(i) for i in range(500)))
        assert len({r["id"] for r in a_runs}) == 500
        waiting_a = await st.db.fetchval("SELECT count(*) FROM admission_queue WHERE organisation_id = 'orga'")
        assert waiting_a > 400  # the burst is still queued when B submits

        b_run = await submit(b, "true", task="b")
        assert b_run["state"] == "queued"
        assert b_run["reason"] == "waiting: the server is at 2/2 active runs"
        submitted = await st.db.fetchval("SELECT clock_timestamp()")

        done = await _ended(b, b_run["id"])
        assert done["state"] == "succeeded"
        b_admitted = await st.db.fetchval("SELECT admitted_at FROM runs WHERE id = $1", uuid.UUID(str(b_run["id"])))
        assert b_admitted is not None and b_admitted > submitted

        # Nothing of A was admitted between B's submit and B's admission: B took the first slot that freed.
        jumped = await st.db.fetchval(
            """SELECT count(*) FROM runs WHERE organisation_id = 'orga'
                   AND admitted_at > $1 AND admitted_at < $2""",
            submitted,
            b_admitted,
        )
        assert jumped == 0

        # A goes on after B, and B started before every A run admitted after it (the launch queue is FIFO).
        async def a_after_b_started() -> list[datetime] | None:
            rows = await st.db.fetch(
                """SELECT started_at FROM runs WHERE organisation_id = 'orga' AND admitted_at > $1
                       ORDER BY admitted_at LIMIT 2""",
                b_admitted,
            )
            starts = [r["started_at"] for r in rows]
            return starts if len(starts) == 2 and all(starts) else None

        later_starts = await wait_until(a_after_b_started, timeout=60, message="A to go on after B")
        b_started = datetime.fromisoformat(str(done["started_at"]))
        assert all(b_started < s for s in later_starts)


async def test_an_organisation_with_limit_one_runs_strictly_one_at_a_time(
    nats_url: str, pg_dsn: str, bus_prefix: str, tmp_path: Path
) -> None:
    async with (
        admission_stack(
            nats_url=nats_url, pg_dsn=pg_dsn, bus_prefix=bus_prefix, work_dir=tmp_path, replicas=["orgc"]
        ) as st,
        st.client("orgc") as c,
    ):
        limits = await _set_limits(c, "orgc", max_runs=1)
        assert limits["limits"] == {"max_runs": 1, "max_gpus": None, "default_timeout_seconds": None}
        runs = [await submit(c, "sleep 1", task=f"c{i}") for i in range(4)]
        assert runs[0]["reason"] == ""
        # The waiting reason is on the run, over REST, while it waits.
        for waiting in runs[1:]:
            assert waiting["reason"] == "waiting: organisation orgc at 1/1 concurrent runs"
        shown = await _run(c, runs[3]["id"])
        assert shown["state"] == "queued"
        assert shown["reason"] == "waiting: organisation orgc at 1/1 concurrent runs"

        ended = [await _ended(c, r["id"]) for r in runs]
        assert [r["state"] for r in ended] == ["succeeded"] * 4
        assert all(r["reason"] == "" for r in ended)  # the waiting reason does not outlive the wait
        intervals = [(datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"])) for r in ended]
        # In submit order, each starts after the one before has finished.
        for (_, finished), (started, _) in itertools.pairwise(intervals):
            assert started >= finished
        assert _max_overlap(intervals) == 1


async def test_a_cancelled_waiting_run_is_never_launched(
    nats_url: str, pg_dsn: str, bus_prefix: str, tmp_path: Path
) -> None:
    async with (
        admission_stack(
            nats_url=nats_url, pg_dsn=pg_dsn, bus_prefix=bus_prefix, work_dir=tmp_path, replicas=["orgc"]
        ) as st,
        st.client("orgc") as c,
    ):
        await _set_limits(c, "orgc", max_runs=1)
        first = await submit(c, "sleep 30", task="long")
        second = await submit(c, "true", task="short")
        assert second["reason"] == "waiting: organisation orgc at 1/1 concurrent runs"
        view = (await c.get("/v1/orgs/orgc/limits")).json()
        assert (view["runs_in_use"], view["runs_waiting"]) == (1, 1)
        cancelled = await c.post(f"/v1/runs/{second['id']}/cancel", json={"reason": "not needed"})
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["state"] == "cancelled"
        await c.post(f"/v1/runs/{first['id']}/cancel", json={})
        assert (await _ended(c, first["id"]))["state"] == "cancelled"

        async def settled() -> bool:
            held = await st.db.fetchval("SELECT count(*) FROM admissions")
            queued = await st.db.fetchval("SELECT count(*) FROM admission_queue")
            return held == 0 and queued == 0

        await wait_until(settled, timeout=20, message="the slot to free and the queue to empty")
        row = await st.db.fetchrow(
            "SELECT state, admitted_at, started_at FROM runs WHERE id = $1", uuid.UUID(second["id"])
        )
        assert row is not None
        assert (row["state"], row["admitted_at"], row["started_at"]) == ("cancelled", None, None)
        leases = await st.db.fetchval("SELECT count(*) FROM leases WHERE run_id = $1", uuid.UUID(second["id"]))
        assert leases == 0
        view = (await c.get("/v1/orgs/orgc/limits")).json()
        assert (view["runs_in_use"], view["runs_waiting"]) == (0, 0)


async def test_several_replicas_admitting_at_once_never_exceed_a_limit(
    nats_url: str, pg_dsn: str, bus_prefix: str, tmp_path: Path
) -> None:
    async with admission_stack(
        nats_url=nats_url,
        pg_dsn=pg_dsn,
        bus_prefix=bus_prefix,
        work_dir=tmp_path,
        replicas=["orgd", "orgd", "orgd"],
    ) as st:
        clients = [st.client("orgd", url) for url in st.rest_urls["orgd"]]
        try:
            await _set_limits(clients[0], "orgd", max_runs=3)
            runs = await asyncio.gather(*(submit(clients[i % 3], "sleep 0.2", task=f"d{i}") for i in range(30)))
            ended = [await _ended(clients[0], r["id"], timeout=120) for r in runs]
            assert {r["state"] for r in ended} == {"succeeded"}
            rows = await st.db.fetch("SELECT admitted_at, finished_at FROM runs WHERE organisation_id = 'orgd'")
            assert len(rows) == 30 and all(r["admitted_at"] and r["finished_at"] for r in rows)
            # A slot is held from admission until the registry records the end, after the run finished.
            overlap = _max_overlap([(r["admitted_at"], r["finished_at"]) for r in rows])
            assert 2 <= overlap <= 3
        finally:
            for client in clients:
                await client.aclose()


async def test_limits_loops_and_default_timeouts(nats_url: str, pg_dsn: str, bus_prefix: str, tmp_path: Path) -> None:
    loops = {
        "metadata": LoopLimits(concurrency=1, default_timeout_seconds=1.0, shared=True),
        "training": LoopLimits(concurrency=1, shared=False),
    }
    async with admission_stack(
        nats_url=nats_url,
        pg_dsn=pg_dsn,
        bus_prefix=bus_prefix,
        work_dir=tmp_path,
        replicas=["orge", "orgf"],
        loops=loops,
    ) as st:
        async with (
            st.client("orge") as e,
            st.client("orgf") as f,
        ):
            view = (await e.get("/v1/orgs/orge/limits")).json()
            assert view["limits"] == {"max_runs": None, "max_gpus": None, "default_timeout_seconds": None}
            # Bad input is a clear 4xx.
            assert (await e.put("/v1/orgs/orge/limits", json={"max_runs": 0})).status_code == 422
            assert (await e.put("/v1/orgs/orge/limits", json={"max_run": 2})).status_code == 422
            missing = await e.put("/v1/orgs/nosuch/limits", json={})
            assert missing.status_code == 404 and "nosuch" in missing.text
            assert (await e.get("/v1/orgs/bad name/limits")).status_code == 422

            await _set_limits(e, "orge", max_gpus=1, default_timeout_seconds=600)
            too_big = await e.post("/v1/runs", json={"command": "true", "resources": {"gpus": 2}})
            assert too_big.status_code == 422
            assert "organisation orge may use at most 1" in too_big.text
            unknown = await e.post("/v1/runs", json={"command": "true", "loop": "nope"})
            assert unknown.status_code == 422 and "metadata" in unknown.text

            # The shared metadata loop: one run at a time across organisations, with its own default timeout.
            slow = await submit(e, "sleep 30", task="fetch", loop="metadata")
            behind = await submit(f, "true", task="fetch", loop="metadata")
            assert behind["reason"] == "waiting: loop metadata busy (1/1)"
            assert (await _ended(e, slow["id"]))["state"] == "timed_out"
            assert (await _ended(f, behind["id"]))["state"] == "succeeded"

            # Outside a loop the organisation's default timeout applies; a run's own timeout comes first.
            await _set_limits(e, "orge", default_timeout_seconds=1)
            defaulted = await submit(e, "sleep 30", task="t")
            own = await submit(e, "sleep 0.2", task="own", timeout_seconds=20)
            assert (await _ended(e, defaulted["id"]))["state"] == "timed_out"
            assert (await _ended(e, own["id"]))["state"] == "succeeded"

            # A loop that is not shared is one queue per organisation.
            await _set_limits(e, "orge")
            e_first = await submit(e, "sleep 30", task="train", loop="training")
            f_first = await submit(f, "sleep 30", task="train", loop="training")
            e_second = await submit(e, "true", task="train", loop="training")
            assert (e_first["reason"], f_first["reason"]) == ("", "")
            assert e_second["reason"] == "waiting: loop training of organisation orge busy (1/1)"
            for client, run in ((e, e_second), (e, e_first), (f, f_first)):
                assert (await client.post(f"/v1/runs/{run['id']}/cancel", json={})).status_code == 200

        # The same limits over gRPC.
        async with aio_channel(st.grpc_targets["orgf"][0], st.tokens["orgf"]) as channel:
            stub = ame_service_pb2_grpc.AmeServiceStub(channel)
            limits = ame_service_pb2.OrganisationLimits(max_runs=2, default_timeout_seconds=3600)
            set_ = await stub.SetOrganisationLimits(
                ame_service_pb2.SetOrganisationLimitsRequest(organisation="orgf", limits=limits)
            )
            assert set_.limits.max_runs == 2 and not set_.limits.HasField("max_gpus")
            got = await stub.GetOrganisationLimits(ame_service_pb2.GetOrganisationLimitsRequest())
            assert got.limits == limits
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.SetOrganisationLimits(
                    ame_service_pb2.SetOrganisationLimitsRequest(
                        organisation="orgf", limits=ame_service_pb2.OrganisationLimits(max_gpus=-1)
                    )
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as missing_org:
                await stub.GetOrganisationLimits(ame_service_pb2.GetOrganisationLimitsRequest(organisation="nosuch"))
            assert missing_org.value.code() == grpc.StatusCode.NOT_FOUND


async def test_org_set_limits_and_limits_from_the_cli(
    nats_url: str, pg_dsn: str, bus_prefix: str, tmp_path: Path
) -> None:
    async with admission_stack(
        nats_url=nats_url, pg_dsn=pg_dsn, bus_prefix=bus_prefix, work_dir=tmp_path, replicas=["chrts"], launchers=0
    ) as st:
        url = st.rest_urls["chrts"][0]
        runner = CliRunner()

        def ame(*args: str) -> Result:
            # In a thread: the CLI's blocking HTTP client would otherwise stall the loop the server runs on.
            return runner.invoke(cli, [*args, "--url", url], env={"AME_TOKEN": st.tokens["chrts"]})

        result = await asyncio.to_thread(
            ame, "org", "set-limits", "chrts", "--max-runs", "1", "--default-timeout", "1h"
        )
        assert result.exit_code == 0, result.output
        assert "max runs:        1 (0 in use)" in result.output
        assert "default timeout: 1h" in result.output
        # A limit not given keeps its value; 'none' removes one.
        result = await asyncio.to_thread(ame, "org", "set-limits", "chrts", "--max-gpus", "2")
        assert result.exit_code == 0, result.output
        result = await asyncio.to_thread(ame, "org", "set-limits", "chrts", "--default-timeout", "none")
        assert result.exit_code == 0, result.output
        result = await asyncio.to_thread(ame, "org", "limits", "chrts", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["limits"] == {"max_runs": 1, "max_gpus": 2, "default_timeout_seconds": None}

        async with st.client("chrts", url) as c:
            await submit(c, "true", task="first")
            waiting = await submit(c, "true", task="second")
        assert waiting["reason"] == "waiting: organisation chrts at 1/1 concurrent runs"
        result = await asyncio.to_thread(ame, "org", "limits", "chrts")
        assert "max runs:        1 (1 in use)" in result.output and "runs waiting:    1" in result.output

        result = await asyncio.to_thread(ame, "org", "limits", "nosuch")
        assert result.exit_code == 1 and "404" in result.output and "nosuch" in result.output
        result = await asyncio.to_thread(ame, "org", "set-limits", "chrts", "--max-gpus", "many")
        assert result.exit_code == 2 and "--max-gpus must be a whole number" in result.output
