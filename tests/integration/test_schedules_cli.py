"""Schedules from ame.yml as a user gets them: `ame project push` activates them, `--no-triggers` does not, and
they fire on the shared simulated clock (ten simulated minutes a second) in a non-UTC zone across a DST change."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from ame.cli.main import cli
from ame.sdk import Client
from ame_platform.clock import ClockSettings
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

# 2026-03-29 in Paris: at 01:00 UTC the clocks go from 02:00 CET to 03:00 CEST. Simulated time starts ten
# simulated minutes before midnight UTC, so the slots around the change come due within seconds.
START = datetime(2026, 3, 28, 23, 50, tzinfo=UTC)
RATE = 600.0

AME_YML = """\
project: {project}
tasks:
  - name: hourly
    executor: !custom
      command: echo tick
    triggers:
      schedule: "{cron}"
      timezone: Europe/Paris
"""


@pytest.fixture
def scheduler_overrides() -> dict[str, object]:
    # Anchored now: the stack's scheduler and this test read the same simulated time.
    clock = ClockSettings(start=START, anchor=datetime.now(UTC), rate=RATE)
    return {"clock": clock, "tick_interval": 0.05, "late_after": "5m", "relay_interval": 0.5}


async def ame(stack: Stack, home: Path, *args: str) -> Result:
    env = {"AME_GRPC_TARGET": stack.grpc_target, "AME_HOME": str(home)}
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env, catch_exceptions=False)


def _project(root: Path, name: str, cron: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ame.yml").write_text(AME_YML.format(project=name, cron=cron))
    return root


async def _slots(stack: Stack, project: str) -> list[datetime]:
    async with stack.runtime.pool.acquire() as conn:
        keys = await conn.fetch(
            "SELECT idempotency_key FROM runs WHERE project = $1 AND trigger = 'schedule' ORDER BY 1", project
        )
    return sorted(datetime.fromtimestamp(int(k["idempotency_key"].rsplit(":", 1)[1]), UTC) for k in keys)


async def test_a_pushed_schedule_fires_on_time_in_paris_across_the_spring_forward(stack: Stack, tmp_path: Path) -> None:
    root = _project(tmp_path / "dst", "dst", "30 * * * *")
    pushed = await ame(stack, tmp_path / "home", "project", "push", str(root))
    assert pushed.exit_code == 0, pushed.output
    assert "schedules: hourly" in pushed.output

    # 01:30 CET, then 02:30 (which does not exist that night) once at the change (03:00 CEST), then 03:30 CEST.
    expected = [
        datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
    ]

    async def three_slots() -> list[datetime] | None:
        slots = await _slots(stack, "dst")
        return slots if len(slots) >= 3 else None

    slots = await wait_until(three_slots, timeout=30, message="three slots of the hourly schedule")
    assert slots[:3] == expected

    listed = await ame(stack, tmp_path / "home", "schedules", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert '"timezone": "Europe/Paris"' in listed.output and '"state": "active"' in listed.output


async def test_push_no_triggers_does_not_activate_and_push_does(stack: Stack, tmp_path: Path) -> None:
    home = tmp_path / "home"
    root = _project(tmp_path / "quiet", "quiet", "0 9 * * *")
    first = await ame(stack, home, "project", "push", "--no-triggers", str(root))
    assert first.exit_code == 0, first.output

    def schedules() -> list[tuple[str, str]]:
        with Client(stack.grpc_target) as client:
            return [(s.task, s.cron) for s in client.list_schedules(project="quiet")]

    assert await asyncio.to_thread(schedules) == []
    async with stack.runtime.pool.acquire() as conn:
        assert await conn.fetchval("SELECT active_version_id FROM projects WHERE name = 'quiet'") is None

    activated = await ame(stack, home, "project", "push", str(root))
    assert activated.exit_code == 0, activated.output
    assert await asyncio.to_thread(schedules) == [("hourly", "0 9 * * *")]

    # An experiment pushed with --no-triggers (as a remote `ame task run` pushes) leaves production's schedule.
    _project(root, "quiet", "*/5 * * * *")
    experiment = await ame(stack, home, "project", "push", "--no-triggers", str(root))
    assert experiment.exit_code == 0, experiment.output
    assert await asyncio.to_thread(schedules) == [("hourly", "0 9 * * *")]

    async def scheduler_has_it() -> bool:
        async with stack.runtime.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT cron, timezone, active FROM schedules WHERE project = 'quiet' AND task = 'hourly'"
            )
        return row is not None and (row["cron"], row["timezone"], row["active"]) == ("0 9 * * *", "Europe/Paris", True)

    await wait_until(scheduler_has_it, timeout=20, message="the scheduler to hold the activated schedule")

    paused = await ame(stack, home, "schedules", "pause", "hourly")
    assert paused.exit_code == 0 and "is paused" in paused.output, paused.output

    async def scheduler_paused() -> bool:
        async with stack.runtime.pool.acquire() as conn:
            return not await conn.fetchval("SELECT enabled FROM schedules WHERE project = 'quiet'")

    await wait_until(scheduler_paused, timeout=20, message="the pause to reach the scheduler")
    triggered = await ame(stack, home, "schedules", "trigger", "hourly")
    assert triggered.exit_code == 0, triggered.output


async def test_enable_triggers_false_activates_no_schedules_and_a_bad_zone_is_refused_at_push(
    stack: Stack, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    root = _project(tmp_path / "off", "off", "0 9 * * *")
    (root / "ame.yml").write_text("enableTriggers: false\n" + (root / "ame.yml").read_text())
    pushed = await ame(stack, home, "project", "push", str(root))
    assert pushed.exit_code == 0 and "triggers are off" in pushed.output, pushed.output

    bad = _project(tmp_path / "bad", "bad", "0 9 * * *")
    (bad / "ame.yml").write_text((bad / "ame.yml").read_text().replace("Europe/Paris", "Europe/Atlantis"))
    refused = await ame(stack, home, "project", "push", str(bad))
    assert refused.exit_code != 0
    assert "ame.yml:8:17" in refused.output and "IANA time zone" in refused.output, refused.output


async def test_rest_lists_pauses_resumes_and_triggers_a_schedule(
    stack: Stack, rest: httpx.AsyncClient, tmp_path: Path
) -> None:
    root = _project(tmp_path / "viarest", "viarest", "15 6 * * 1-5")
    pushed = await ame(stack, tmp_path / "home", "project", "push", str(root))
    assert pushed.exit_code == 0, pushed.output

    listed = await rest.get("/v1/schedules", params={"project": "viarest"})
    assert listed.status_code == 200, listed.text
    [schedule] = listed.json()["schedules"]
    assert (schedule["task"], schedule["cron"], schedule["timezone"], schedule["state"]) == (
        "hourly",
        "15 6 * * 1-5",
        "Europe/Paris",
        "active",
    )
    assert len(schedule["next_fire_times"]) == 3

    paused = await rest.post("/v1/schedules/hourly/pause", params={"project": "viarest"})
    assert paused.status_code == 200 and paused.json()["state"] == "paused", paused.text
    assert paused.json()["next_fire_times"] == []
    resumed = await rest.post("/v1/schedules/hourly/resume", params={"project": "viarest"})
    assert resumed.status_code == 200 and resumed.json()["state"] == "active", resumed.text
    triggered = await rest.post("/v1/schedules/hourly/trigger", params={"project": "viarest"})
    assert triggered.status_code == 201, triggered.text
    assert triggered.json()["trigger"] == "schedule" and triggered.json()["spec"]["project"] == "viarest"

    unknown = await rest.post("/v1/schedules/nothing-here/pause")
    assert unknown.status_code == 404 and "nothing-here" in unknown.json()["error"], unknown.text
