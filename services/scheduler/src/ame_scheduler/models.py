"""Models: a training run, then its validation run, sequenced by events (not a general DAG engine).

1. The api records a model version and publishes `ModelTrainRequested` (consumer `scheduler-models`). The
   scheduler stores it with run ids it chooses for the training and the validation run, then asks the api for the
   training run (`ModelRunRequested`, msg id and idempotency key `model:<version>:train`).
2. When a run ends `succeeded` (consumer `scheduler-model-runs` on `evt.run.succeeded`) and it is a stored
   training run, the scheduler asks for the validation run (`model:<version>:validate`), which names the training
   run as its `input_run_id`: the launcher places the training run's artifacts in its working directory.

The row is stored before any request is published and the run ids are fixed in it, so the order in which a run's
end and its training request arrive cannot lose the validation, and a restart at any point asks again: the msg ids
and the api's idempotency keys make a repeated request start nothing new. A training that fails, times out or is
cancelled asks for nothing; the api derives the version's state from its runs.
"""

from __future__ import annotations

import logging

from nats.aio.msg import Msg

from ame import codecs, model_messages
from ame.codecs import DecodeError
from ame.domain import RunSpec, RunState
from ame_platform.bus.consumer import Poison
from ame_platform.bus.publisher import headers_for
from ame_platform.runtime import Runtime
from ame_scheduler.repositories import models as repo

log = logging.getLogger(__name__)


class ModelSequencer:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def handle_train_requested(self, msg: Msg) -> None:
        try:
            request = model_messages.parse_train_requested(msg.data)
        except DecodeError as exc:
            raise Poison(str(exc)) from exc
        async with self._rt.pool.acquire() as conn:
            training = await repo.record(
                conn,
                model_version_id=request.model_version_id,
                organisation=request.organisation,
                has_validation=request.validation is not None,
                request=msg.data,
            )
        await self._ask(training, model_messages.TRAIN, request.training, input_run_id="")
        log.info("model %s/%s v%d: training asked for", request.project, request.model, request.number)

    async def handle_run_succeeded(self, msg: Msg) -> None:
        try:
            event = codecs.parse_state_changed(msg.data)
        except DecodeError as exc:
            raise Poison(str(exc)) from exc
        if event.state != RunState.SUCCEEDED:
            return
        async with self._rt.pool.acquire() as conn:
            training = await repo.by_training_run(conn, event.run_id)
        if training is None or training.validation_run_id is None:
            return  # not a model's training run, or a model without validation: nothing follows
        request = model_messages.parse_train_requested(training.request)
        assert request.validation is not None
        await self._ask(training, model_messages.VALIDATE, request.validation, input_run_id=training.training_run_id)
        log.info("model %s/%s v%d: validation asked for", request.project, request.model, request.number)

    async def _ask(self, training: repo.Training, stage: str, spec: RunSpec, *, input_run_id: str) -> None:
        run_id = training.training_run_id if stage == model_messages.TRAIN else training.validation_run_id
        assert run_id is not None
        key = model_messages.run_key(training.model_version_id, stage)
        payload = model_messages.encode_run_requested(
            model_messages.RunRequest(
                model_version_id=training.model_version_id,
                organisation=training.organisation,
                stage=stage,
                run_id=run_id,
                key=key,
                spec=spec.model_copy(update={"input_run_id": input_run_id}) if input_run_id else spec,
            )
        )
        await self._rt.js.publish(self._rt.names.model_run_requested, payload, headers=headers_for(key), timeout=5.0)
        async with self._rt.pool.acquire() as conn:
            await repo.mark_requested(conn, model_version_id=training.model_version_id, stage=stage)
