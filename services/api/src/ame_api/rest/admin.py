"""/v1/admin: operator endpoints. Dead letters: list the messages consumers gave up on, and replay them.

Admin only once tokens exist; until then, like the rest of the API, they are open to whoever reaches it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from ame_platform.bus.deadletters import DeadLetter, DeadLetterNotFound, DeadLetterQueue, NotReplayable

_MAX_SEQ = 2**63 - 1


class DeadLetterOut(BaseModel):
    id: int = Field(description="The dead letter's id (its sequence in the dead-letter stream).")
    subject: str = Field(description="Where the message was published; a replay publishes it there again.")
    stream: str
    stream_seq: int = Field(description="The message's sequence in its own stream.")
    consumer: str = Field(description="The durable consumer that gave up on it.")
    deliveries: int
    failures: int = Field(description="Permanent failures counted before it was dead-lettered.")
    reason: str
    at: datetime | None
    payload_bytes: int
    replayable: bool


class DeadLetterList(BaseModel):
    deadletters: list[DeadLetterOut]
    next_after: int = Field(0, description="Pass as `after` for the next page; 0 on the last.")


def _out(letter: DeadLetter) -> DeadLetterOut:
    return DeadLetterOut(
        id=letter.id,
        subject=letter.subject,
        stream=letter.stream,
        stream_seq=letter.stream_seq,
        consumer=letter.consumer,
        deliveries=letter.deliveries,
        failures=letter.failures,
        reason=letter.reason,
        at=letter.at,
        payload_bytes=len(letter.payload) or letter.payload_dropped,
        replayable=letter.replayable,
    )


def router(deadletters: DeadLetterQueue) -> APIRouter:
    api = APIRouter(prefix="/v1/admin", tags=["admin"])

    @api.get("/deadletters", response_model=DeadLetterList, summary="List dead-lettered messages, oldest first")
    async def list_deadletters(
        after: Annotated[int, Query(ge=0, le=_MAX_SEQ, description="Only ids above this.")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> DeadLetterList:
        # An outage of the bus is answered 503 + Retry-After by the app's error guard, like every route's.
        letters = await deadletters.list(after=after, limit=limit + 1)
        more = len(letters) > limit
        letters = letters[:limit]
        return DeadLetterList(deadletters=[_out(x) for x in letters], next_after=letters[-1].id if more else 0)

    @api.post(
        "/deadletters/{letter_id}/replay",
        response_model=DeadLetterOut,
        summary="Publish a dead letter to its original subject again and remove it",
    )
    async def replay_deadletter(letter_id: Annotated[int, Path(ge=1, le=_MAX_SEQ)]) -> DeadLetterOut:
        try:
            return _out(await deadletters.replay(letter_id))
        except DeadLetterNotFound as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc
        except NotReplayable as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc

    return api
