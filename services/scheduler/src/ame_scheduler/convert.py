"""The only module of the scheduler where generated contracts meet domain types."""

from __future__ import annotations

from datetime import datetime

from ame import codecs
from ame.contracts.trigger.v1 import trigger_pb2
from ame.domain import RunSpec


def schedule_fired(schedule_id: str, organisation: str, cron: str, spec: RunSpec, slot: datetime) -> bytes:
    return trigger_pb2.ScheduleFired(
        schedule=trigger_pb2.Schedule(
            id=schedule_id,
            organisation=organisation,
            project=spec.project,
            task=spec.task,
            cron=cron,
            enabled=True,
            spec=codecs.run_spec_to_pb(spec),
        ),
        slot=codecs.timestamp(slot),
        fired_at=codecs.now_pb(),
    ).SerializeToString()
