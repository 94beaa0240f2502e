"""/v1/orgs/{org}/limits: an organisation's admission limits (`ame org set-limits`, `ame org limits`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from ame.domain.limits import MAX_NAME_CHARS, NAME_PATTERN
from ame.domain.quotas import OrganisationLimits
from ame_api.admission import Admission, LimitsView

OrgName = Annotated[str, Path(min_length=1, max_length=MAX_NAME_CHARS, pattern=NAME_PATTERN)]


class OrganisationLimitsView(BaseModel):
    model_config = ConfigDict(extra="forbid")

    organisation: str
    limits: OrganisationLimits
    runs_in_use: int = Field(description="Runs of the organisation's own queue holding a slot now.")
    gpus_in_use: int = Field(description="GPUs of all the organisation's admitted runs.")
    runs_waiting: int = Field(description="Runs of the organisation waiting for admission.")


def _view(view: LimitsView) -> OrganisationLimitsView:
    return OrganisationLimitsView(
        organisation=view.organisation,
        limits=view.limits,
        runs_in_use=view.runs_in_use,
        gpus_in_use=view.gpus_in_use,
        runs_waiting=view.runs_waiting,
    )


def router(admission: Admission) -> APIRouter:
    api = APIRouter(prefix="/v1/orgs", tags=["organisations"])

    @api.put(
        "/{org}/limits",
        response_model=OrganisationLimitsView,
        summary="Set an organisation's limits",
        description="Replaces the organisation's limits whole; a limit left out (or null) is no limit. Runs that "
        "the new limits allow are admitted at once.",
    )
    async def set_limits(org: OrgName, limits: OrganisationLimits) -> OrganisationLimitsView:
        return _view(await admission.set_limits(org, limits))

    @api.get(
        "/{org}/limits",
        response_model=OrganisationLimitsView,
        summary="An organisation's limits and what it uses now",
    )
    async def get_limits(org: OrgName) -> OrganisationLimitsView:
        return _view(await admission.get_limits(org))

    return api
