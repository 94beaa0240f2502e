"""Every stream, subject and durable consumer name AME uses, in one place.

Names are derived from a prefix (`AME_NATS_PREFIX`, default "ame") so several installations, or every test,
can share one NATS server without seeing each other's messages.

Streams are split by retention:
* COMMANDS, work-queue retention: a launch command is removed once one launcher acknowledges it.
* EVENTS, limits retention: run state changes, cancel requests, triggers, project updates; any number of
  consumers read them.
* LOGS, limits retention with an age and size cap: one subject per run, so a late follower replays a run's
  output from the start and then follows it live; the logs service archives it before it ages out.
* DEADLETTER, limits retention with an age cap: messages a consumer gave up on (`<prefix>.dlq.<durable>`),
  with the original subject, headers and payload and the reason, until an operator replays or they age out.
"""

from __future__ import annotations

from dataclasses import dataclass

from ame.domain import RunState

# Durable consumers are named <service>-<purpose> and shared by all replicas of that service.
LAUNCHER_LAUNCH = "launcher-launch"
API_REGISTRY = "api-registry"
API_TRIGGERS = "api-triggers"
LOGS_ARCHIVE = "logs-archive"
SCHEDULER_RUN_EVENTS = "scheduler-run-events"
SCHEDULER_RETRIES = "scheduler-retries"
SCHEDULER_SCHEDULES = "scheduler-schedules"
# Models: the scheduler sequences a training and its validation; the api starts the runs it asks for.
SCHEDULER_MODELS = "scheduler-models"
SCHEDULER_MODEL_RUNS = "scheduler-model-runs"
API_MODEL_RUNS = "api-model-runs"
# Pipelines: the coordinator reads submitted pipelines, its steps' state changes and cancels; the api turns the
# coordinator's step requests into child runs.
SCHEDULER_PIPELINES = "scheduler-pipelines"
SCHEDULER_PIPELINE_RUNS = "scheduler-pipeline-runs"
SCHEDULER_PIPELINE_CANCELS = "scheduler-pipeline-cancels"
API_PIPELINE_STEPS = "api-pipeline-steps"


@dataclass(frozen=True)
class BusNames:
    prefix: str = "ame"

    # Streams
    @property
    def commands_stream(self) -> str:
        return f"{self._upper}_COMMANDS"

    @property
    def events_stream(self) -> str:
        return f"{self._upper}_EVENTS"

    @property
    def logs_stream(self) -> str:
        return f"{self._upper}_LOGS"

    @property
    def deadletter_stream(self) -> str:
        return f"{self._upper}_DEADLETTER"

    @property
    def _upper(self) -> str:
        return self.prefix.upper().replace("-", "_")

    # Commands (imperative)
    @property
    def commands_wildcard(self) -> str:
        return f"{self.prefix}.cmd.>"

    @property
    def run_launch(self) -> str:
        return f"{self.prefix}.cmd.run.launch"

    # Events (ame.<aggregate>.<past tense>)
    @property
    def events_wildcard(self) -> str:
        return f"{self.prefix}.evt.>"

    def run_state(self, state: RunState) -> str:
        return f"{self.prefix}.evt.run.{state.value}"

    @property
    def run_states_wildcard(self) -> str:
        return f"{self.prefix}.evt.run.*"

    def run_cancel_requested(self, run_id: str) -> str:
        # One subject per run, so a launcher that receives a launch command can ask the stream for the last
        # message on it and skip a run that was cancelled while queued.
        return f"{self.prefix}.evt.runcancel.{run_id}"

    @property
    def run_cancel_wildcard(self) -> str:
        return f"{self.prefix}.evt.runcancel.*"

    @property
    def run_retry_requested(self) -> str:
        # Not under `evt.run.*`: that wildcard is the registry's, and carries state changes only.
        return f"{self.prefix}.evt.runretry.requested"

    @property
    def schedule_fired(self) -> str:
        return f"{self.prefix}.evt.schedule.fired"

    @property
    def pipeline_started(self) -> str:
        return f"{self.prefix}.evt.pipeline.started"

    @property
    def pipeline_step_requested(self) -> str:
        return f"{self.prefix}.evt.pipeline.step"

    @property
    def project_schedules(self) -> str:
        return f"{self.prefix}.evt.project.schedules"

    @property
    def project_version_created(self) -> str:
        return f"{self.prefix}.evt.project.version_created"

    @property
    def model_train_requested(self) -> str:
        return f"{self.prefix}.evt.model.train_requested"

    @property
    def model_run_requested(self) -> str:
        return f"{self.prefix}.evt.model.run_requested"

    # Logs
    def run_log(self, run_id: str) -> str:
        return f"{self.prefix}.log.{run_id}"

    @property
    def logs_wildcard(self) -> str:
        return f"{self.prefix}.log.>"

    # Dead letters: one subject per durable consumer that gave up on a message
    def deadletter(self, durable: str) -> str:
        return f"{self.prefix}.dlq.{durable}"

    @property
    def deadletter_wildcard(self) -> str:
        return f"{self.prefix}.dlq.>"

    # Request/reply services (core NATS, queue groups)
    @property
    def logs_history(self) -> str:
        return f"{self.prefix}.svc.logs.history"

    def queue_group(self, service: str) -> str:
        return f"{self.prefix}-{service}"
