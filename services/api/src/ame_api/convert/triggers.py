"""What starts runs besides a client: schedules (their fires, requests and summaries) and the activation that
sets them, webhooks, git project sources."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ame import bus_messages, codecs
from ame.codecs import DecodeError
from ame.contracts.api.v1 import ame_service_pb2
from ame.domain.schedules import Activation, ScheduleSummary
from ame.domain.sources import ProjectSource
from ame_api.convert.fields import NAME_FILTER, checked

if TYPE_CHECKING:
    from ame_api.webhooks import HookListing


def parse_schedule_fired(data: bytes) -> bus_messages.FiredSlot:
    """The run a schedule slot asks for, the idempotency key that makes it one run per slot, whose it is and
    what it does while the schedule's previous run still runs."""
    return bus_messages.parse_schedule_fired_slot(data)


@dataclass(frozen=True)
class ScheduleQuery:
    organisation: str
    name: str
    project: str | None


def schedule_request(request: ame_service_pb2.ScheduleRequest) -> ScheduleQuery:
    if not request.name:
        raise DecodeError("name: give the schedule's (task's) name")
    return ScheduleQuery(
        organisation=checked(NAME_FILTER, request.organisation, "organisation"),
        name=checked(NAME_FILTER, request.name, "name"),
        project=checked(NAME_FILTER, request.project, "project") or None,
    )


def activate_request(request: ame_service_pb2.ActivateProjectVersionRequest) -> tuple[str, str, str]:
    """(organisation, project, version id)."""
    if not request.project:
        raise DecodeError("project: give the project's name")
    return (
        checked(NAME_FILTER, request.organisation, "organisation"),
        checked(NAME_FILTER, request.project, "project"),
        request.version_id[:200],
    )


def schedule_to_pb(summary: ScheduleSummary) -> ame_service_pb2.ScheduleSummary:
    pb = ame_service_pb2.ScheduleSummary(
        organisation=summary.organisation,
        project=summary.project,
        task=summary.task,
        cron=summary.cron,
        timezone=summary.timezone,
        catch_up=summary.catch_up,
        overlap=summary.overlap,
        jitter_seconds=summary.jitter_seconds,
        state=summary.state,
        project_version_id=summary.project_version_id,
        next_fire_times=[codecs.timestamp(t) for t in summary.next_fire_times],
        last_run_id=summary.last_run_id,
        last_run_state=summary.last_run_state,
    )
    if summary.last_run_at is not None:
        pb.last_run_at.CopyFrom(codecs.timestamp(summary.last_run_at))
    return pb


def activation_to_pb(activation: Activation) -> ame_service_pb2.ActivateProjectVersionResponse:
    return ame_service_pb2.ActivateProjectVersionResponse(
        project=activation.project,
        project_version_id=activation.project_version_id,
        schedules=[schedule_to_pb(s) for s in activation.schedules],
        triggers_enabled=activation.triggers_enabled,
    )


def webhook_pb(hook: HookListing) -> ame_service_pb2.Webhook:
    """A hook as `ame hooks list` shows it: URL, the secret's name (never its value), recent deliveries."""
    pb = ame_service_pb2.Webhook(
        project=hook.project,
        task=hook.task,
        url=hook.url,
        secret_name=hook.secret_name,
        version_id=hook.version_id,
    )
    for d in hook.deliveries:
        delivery = pb.deliveries.add(delivery_id=d.delivery_id, status=d.status, outcome=d.outcome, run_id=d.run_id)
        delivery.received_at.FromDatetime(d.received_at)
    return pb


def project_source_to_pb(source: ProjectSource) -> ame_service_pb2.ProjectSource:
    """A source as `ame projectsrc list` shows it: secret names only, never a value."""
    pb = ame_service_pb2.ProjectSource(
        id=source.id,
        url=source.url,
        branch=source.branch,
        path=source.path,
        interval_seconds=source.interval_seconds,
        secret_name=source.secret_name,
        hook_secret_name=source.hook_secret_name,
        hook_url=source.hook_url,
        state=source.state.value,
        reason=source.reason,
        synced_commit=source.synced_commit,
        project=source.project,
        version_id=source.version_id,
    )
    if source.synced_at is not None:
        pb.synced_at.FromDatetime(source.synced_at)
    pb.created_at.FromDatetime(source.created_at)
    pb.next_sync_at.FromDatetime(source.next_sync_at)
    return pb
