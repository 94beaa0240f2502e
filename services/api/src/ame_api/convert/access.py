"""Access: who am I, tokens, organisations and their limits, secrets (names and times, never a stored value)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import TypeAdapter, ValidationError

from ame import codecs
from ame.codecs import DecodeError
from ame.contracts.api.v1 import ame_service_pb2
from ame.domain import errors
from ame.domain.limits import NameFilter
from ame.domain.principals import Principal, Scope
from ame.domain.quotas import OrganisationLimits
from ame_api.convert.fields import checked
from ame_api.repositories.tokens import Organisation, TokenRecord

if TYPE_CHECKING:
    from ame_api.repositories.secrets import SecretRow
    from ame_api.secrets.service import Resolved

_ORGANISATION: TypeAdapter[str] = TypeAdapter(NameFilter)


def organisation_request(value: str) -> str:
    """An organisation name from a request; empty stands for the server's own."""
    return checked(_ORGANISATION, value, "organisation")


def limits_request(request: ame_service_pb2.SetOrganisationLimitsRequest) -> tuple[str, OrganisationLimits]:
    pb = request.limits
    try:
        limits = OrganisationLimits(
            max_runs=pb.max_runs if pb.HasField("max_runs") else None,
            max_gpus=pb.max_gpus if pb.HasField("max_gpus") else None,
            default_timeout_seconds=pb.default_timeout_seconds if pb.HasField("default_timeout_seconds") else None,
        )
    except ValidationError as exc:
        raise DecodeError(errors.describe(exc)) from None
    return organisation_request(request.organisation), limits


def limits_to_pb(limits: OrganisationLimits) -> ame_service_pb2.OrganisationLimits:
    pb = ame_service_pb2.OrganisationLimits()
    if limits.max_runs is not None:
        pb.max_runs = limits.max_runs
    if limits.max_gpus is not None:
        pb.max_gpus = limits.max_gpus
    if limits.default_timeout_seconds is not None:
        pb.default_timeout_seconds = limits.default_timeout_seconds
    return pb


def whoami_pb(principal: Principal) -> ame_service_pb2.WhoAmIResponse:
    return ame_service_pb2.WhoAmIResponse(
        organisation=principal.organisation,
        scope=principal.scope.value,
        kind=principal.kind.value,
        token_id=principal.subject,
    )


def token_to_pb(record: TokenRecord) -> ame_service_pb2.ApiToken:
    pb = ame_service_pb2.ApiToken(
        id=record.id,
        organisation=record.organisation,
        scope=record.scope.value,
        name=record.name,
        created_by=record.created_by,
        created_at=codecs.timestamp(record.created_at),
    )
    if record.expires_at is not None:
        pb.expires_at.CopyFrom(codecs.timestamp(record.expires_at))
    if record.revoked_at is not None:
        pb.revoked_at.CopyFrom(codecs.timestamp(record.revoked_at))
    return pb


def scope_request(value: str) -> Scope:
    """A scope named in a request; empty for `run`."""
    try:
        return Scope(value or Scope.RUN.value)
    except ValueError:
        raise DecodeError(f"scope must be one of {', '.join(s.value for s in Scope)}, not {value[:40]!r}") from None


def organisation_to_pb(org: Organisation) -> ame_service_pb2.Organisation:
    return ame_service_pb2.Organisation(id=org.id, created_at=codecs.timestamp(org.created_at))


def secret_info_pb(row: SecretRow) -> ame_service_pb2.SecretInfo:
    """A secret as listings show it: its name and times, never its value."""
    info = ame_service_pb2.SecretInfo(name=row.name)
    info.created_at.FromDatetime(row.created_at)
    info.updated_at.FromDatetime(row.updated_at)
    return info


def resolved_secret_pb(resolved: Resolved) -> ame_service_pb2.ResolvedSecret:
    return ame_service_pb2.ResolvedSecret(
        vault=resolved.vault,
        key=resolved.key,
        value=resolved.value or "",
        found=resolved.value is not None,
        problem=resolved.problem,
    )
