"""History pages of the log archive: every line, in order, and the end only with the last page."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from ame import codecs
from ame.contracts.log.v1 import log_pb2
from ame.domain import LogLine, new_run_id
from ame_logs.archive import HistoryResponder
from ame_logs.repositories import archive
from ame_logs.settings import LogsSettings
from ame_platform.runtime import open_runtime
from ame_platform.settings import NatsSettings, PostgresSettings, TelemetrySettings
from ame_server.server import migrate_all

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


async def _page(responder: HistoryResponder, run_id: str, from_seq: int) -> log_pb2.HistoryReply:
    data = await responder.history(log_pb2.HistoryRequest(run_id=run_id, from_seq=from_seq).SerializeToString())
    return log_pb2.HistoryReply.FromString(data)


@pytest.mark.parametrize("total_in_end", [12000, 0])
async def test_history_pages_through_everything_even_when_the_total_is_unknown(
    nats_url: str, pg_dsn: str, bus_prefix: str, total_in_end: int
) -> None:
    """total_in_end=0 is what the reconciler records for a lost run: the total is unknown."""
    from datetime import UTC, datetime

    await migrate_all(pg_dsn)
    nats = NatsSettings(url=nats_url, prefix=bus_prefix)
    postgres = PostgresSettings(dsn=SecretStr(pg_dsn))
    async with open_runtime(name="history", nats=nats, postgres=postgres, telemetry=TelemetrySettings()) as rt:
        # Pages smaller than the output, so that it takes several.
        responder = HistoryResponder(rt, LogsSettings(nats=nats, postgres=postgres, history_page_lines=5000))
        run_id = new_run_id()
        now = datetime.now(UTC)
        async with rt.pool.acquire() as conn:
            for first in range(0, 12000, 256):
                lines = [
                    codecs.log_line_to_pb(LogLine(seq=s, stream="stdout", text=f"l{s}", at=now))
                    for s in range(first, min(first + 256, 12000))
                ]
                await archive.create_chunk(
                    conn,
                    run_id=run_id,
                    attempt=1,
                    first_seq=lines[0].seq,
                    last_seq=lines[-1].seq,
                    payload=log_pb2.LogChunk(lines=lines).SerializeToString(),
                )
            await archive.create_end(
                conn, run_id=run_id, attempt=1, state="lost", exit_code=None, reason="gone", total_lines=total_in_end
            )
        seen: list[str] = []
        ends = 0
        seq = 0
        for _ in range(100):
            reply = await _page(responder, run_id, seq)
            seen += [line.text for line in reply.lines]
            seq += len(reply.lines)
            if reply.HasField("end"):
                ends += 1
                assert not reply.has_more
                break
            assert reply.has_more
        assert seen == [f"l{s}" for s in range(12000)]
        assert ends == 1
