"""Webhooks: a signed POST to `/v1/hooks/{org}/{project}/{task}` starts the task from its project's trigger version,
with the JSON payload as the run's task arguments.

No token: the signature is the credential. The route answers a delivery it cannot authenticate for any reason (no
such organisation, project, hook or secret; no, a bad or a stale signature) with the same 401 and the same body,
so a caller cannot probe which hooks exist; the reason is counted (metric `ame.webhooks.refused`) and, for a hook
that exists, recorded with the delivery. Secret values never leave this module: they are neither logged nor part
of any response.

Two signature schemes, both HMAC-SHA256 with the secret named by `triggers.webhook.secret`:
* GitHub's: `X-Hub-Signature-256: sha256=<hex>` over the raw body;
* AME's, replay-safe: `X-AME-Signature-256: sha256=<hex>` over `<X-AME-Timestamp>.<body>`, refused when the
  timestamp (Unix seconds) is further than `max_age` from now.
A delivery id (`X-AME-Delivery`, else `X-GitHub-Delivery`, else the signature itself) makes redelivery idempotent:
one run per (project, task, delivery id).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import JsonValue, ValidationError

from ame.domain import RunSpec, TriggerKind
from ame.domain.limits import MAX_IDEMPOTENCY_KEY_CHARS, MAX_TASK_ARGS_BYTES
from ame.domain.principals import Principal
from ame.domain.task_args import decode_task_args, encode_task_args
from ame.run_specs import run_spec_for_any_task, with_args
from ame.spec import ExternalTemplates, Project, SpecError, resolve_task
from ame_api import organisations
from ame_api.rate_limits import TokenBuckets
from ame_api.repositories import runs as runs_repo
from ame_api.repositories import webhooks as repo
from ame_api.runs import Conflict, InvalidRequest, RunService
from ame_api.secrets.service import SecretService
from ame_api.settings import ApiSettings
from ame_platform.runtime import Runtime

log = logging.getLogger(__name__)

__all__ = [
    "REFUSED_BODY",
    "DeliveryAnswer",
    "HookListing",
    "WebhookService",
    "hooks_of_version",
    "signature_problem",
]

# The one answer to every delivery that is not authenticated, whatever the reason.
REFUSED_BODY = {"error": "unknown webhook or bad signature"}
_DELIVERY_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


def wall_clock() -> float:
    """The time signatures are checked against (the one place it is read; tests and a platform clock swap it)."""
    return time.time()


def hooks_of_version(
    project: Project, project_name: str, version_id: str, *, external_templates: ExternalTemplates | None = None
) -> list[tuple[str, str, RunSpec]]:
    """(task, secret name, run spec) of every task with `triggers.webhook` in the version's ame.yml.

    A hooked pipeline starts the whole pipeline, every step with the payload as its task arguments. Raises
    InvalidRequest for a hooked task the server cannot run, so the push fails with the reason rather than the hook
    later. Templates from other projects come from `external_templates` (the pinned versions).
    """
    hooks: list[tuple[str, str, RunSpec]] = []
    if project.enable_triggers is False:
        return hooks  # `enableTriggers: false`: no schedule and no hook of this version is live
    for name, task in project.tasks.items():
        written = task.triggers.webhook.secret if task.triggers and task.triggers.webhook else None
        if written is None:
            continue
        try:
            resolved = resolve_task(project, name, external_templates=external_templates)
        except SpecError as exc:
            raise InvalidRequest(f"task {name!r} has a webhook, but the server cannot resolve it: {exc}") from None
        try:
            spec = run_spec_for_any_task(resolved, project=project_name, project_version_id=version_id)
        except ValueError as exc:
            raise InvalidRequest(f"task {name!r} has a webhook, but the server cannot run it: {exc}") from None
        hooks.append((name, written, spec))
    return hooks


@dataclass(frozen=True)
class DeliveryAnswer:
    status: int
    body: dict[str, str | bool]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeliveryRecord:
    delivery_id: str
    received_at: datetime
    status: int
    outcome: str
    run_id: str


@dataclass(frozen=True)
class HookListing:
    project: str
    task: str
    url: str
    secret_name: str
    version_id: str
    deliveries: list[DeliveryRecord]


def _refused() -> DeliveryAnswer:
    return DeliveryAnswer(401, dict(REFUSED_BODY))


def _hmac_hex(secret: str, message: bytes) -> bytes:
    return b"sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest().encode()


def _same(expected: bytes, given: str) -> bool:
    # Constant time; latin-1 keeps any header byte as it came, so a non-ASCII header compares as unequal.
    return hmac.compare_digest(expected, given.encode("latin-1", "replace"))


def signature_problem(secret: str, body: bytes, headers: Mapping[str, str], *, now: float, max_age: float) -> str:
    """'' when the delivery is signed with `secret` (either scheme), else why not (for a metric and a record).

    The one signature check of every signed endpoint: task webhooks and the push hooks of git project sources.
    `headers`: lower-case names.
    """
    ame_signature = headers.get("x-ame-signature-256")
    if ame_signature is not None:
        stamp = headers.get("x-ame-timestamp", "")
        if not _TIMESTAMP.match(stamp):
            return "bad timestamp"
        if abs(now - int(stamp)) > max_age:
            return "stale timestamp"
        if not _same(_hmac_hex(secret, stamp.encode() + b"." + body), ame_signature):
            return "bad signature"
        return ""
    github_signature = headers.get("x-hub-signature-256")
    if github_signature is None:
        return "unsigned"
    if not _same(_hmac_hex(secret, body), github_signature):
        return "bad signature"
    return ""


class WebhookService:
    def __init__(
        self,
        runtime: Runtime,
        settings: ApiSettings,
        runs: RunService,
        secrets: SecretService,
        *,
        clock: Callable[[], float] = wall_clock,
    ) -> None:
        self._rt = runtime
        self._settings = settings.webhooks
        self._runs = runs
        self._secrets = secrets
        self._clock = clock
        self._buckets = TokenBuckets(self._settings.rate, self._settings.burst)
        meter = runtime.telemetry.meter("ame_api")
        self._refused = meter.create_counter(
            "ame.webhooks.refused", description="Webhook deliveries answered 401, by reason (never with a run)."
        )
        self._accepted = meter.create_counter("ame.webhooks.accepted", description="Webhook deliveries answered 202.")
        self._limited = meter.create_counter("ame.webhooks.rate_limited", description="Deliveries answered 429.")
        # Set by the app once the REST server is bound (its address is known only then).
        self.rest_url = ""
        self._recording: set[asyncio.Task[DeliveryAnswer]] = set()

    @property
    def max_body_bytes(self) -> int:
        return self._settings.max_body_bytes

    def admit(self, organisation: str, project: str, task: str) -> DeliveryAnswer | None:
        """A 429 when the hook's bucket is empty (before its body is read or anything is looked up), else None."""
        wait = self._buckets.take(f"{organisation}\x00{project}\x00{task}")
        if wait <= 0:
            return None
        self._limited.add(1)
        return DeliveryAnswer(
            429,
            {"error": "too many deliveries to this webhook; retry later"},
            {"Retry-After": str(max(1, int(wait + 0.999)))},
        )

    async def deliver(
        self, organisation: str, project: str, task: str, body: bytes, headers: Mapping[str, str]
    ) -> DeliveryAnswer:
        """Authenticate the delivery and start (or find, for a redelivery) its run. `headers`: lower-case names."""
        async with self._rt.pool.acquire() as conn:
            hook = await repo.find_hook(conn, organisation=organisation, project=project, task=task)
        if hook is None:
            self._refused.add(1, {"reason": "unknown hook"})
            return _refused()
        secret = (
            self._secrets.open_sealed(organisation, hook.secret_name, hook.sealed) if hook.sealed is not None else None
        )
        if secret is None:
            log.warning(
                "webhook %s/%s/%s: its secret %r is not in the secret store; every delivery is refused",
                organisation,
                project,
                task,
                hook.secret_name,
            )
            return await self._refuse(hook, "signing secret not stored", headers)
        problem = self.check_signature(secret, body, headers)
        del secret
        if problem:
            return await self._refuse(hook, problem, headers)
        # One run per signed payload: the signature (over the body, and the timestamp in AME's scheme) names the
        # delivery, because the delivery id header is not signed: keying runs by it would let anyone who saw one
        # delivery start new runs by replaying its bytes under fresh ids. The id is kept for the record.
        signature = headers.get("x-ame-signature-256") or headers.get("x-hub-signature-256") or ""
        signed = "sig-" + hashlib.sha256(signature.encode("latin-1", "replace")).hexdigest()[:32]
        delivery = headers.get("x-ame-delivery") or headers.get("x-github-delivery")
        if delivery is None:
            delivery = signed
        elif not _DELIVERY_ID.match(delivery):
            return await self._answer(
                hook,
                "-",
                DeliveryAnswer(400, {"error": "the delivery id is 1-128 letters, digits, '.', '_', ':', '-'"}),
            )
        try:
            args = decode_task_args(body)
        except ValueError as exc:
            return await self._answer(hook, delivery, DeliveryAnswer(422, {"error": f"the body is not JSON: {exc}"}))
        return await self._start(hook, delivery, signed, args)

    def check_signature(self, secret: str, body: bytes, headers: Mapping[str, str]) -> str:
        return signature_problem(secret, body, headers, now=self._clock(), max_age=self._settings.max_age)

    async def _refuse(self, hook: repo.Hook, reason: str, headers: Mapping[str, str]) -> DeliveryAnswer:
        self._refused.add(1, {"reason": reason})
        delivery = headers.get("x-ame-delivery") or headers.get("x-github-delivery") or "-"
        if not _DELIVERY_ID.match(delivery):
            delivery = "-"
        answer = _refused()
        # Recorded after the answer, so a refusal at a hook that exists takes the time one at an unknown hook does.
        task = asyncio.create_task(self._answer(hook, delivery, answer, outcome=f"refused: {reason}"))
        self._recording.add(task)
        task.add_done_callback(self._recorded)
        return answer

    def _recorded(self, task: asyncio.Task[DeliveryAnswer]) -> None:
        self._recording.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("recording a refused webhook delivery failed: %r", task.exception())

    async def _start(self, hook: repo.Hook, delivery: str, signed: str, args: JsonValue) -> DeliveryAnswer:
        key = f"hook:{hook.project}:{hook.task}:{signed}"
        if len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
            key = "hook:" + hashlib.sha256(key.encode()).hexdigest()
        org = hook.organisation
        async with self._rt.pool.acquire() as conn:
            earlier = await runs_repo.find_by_idempotency_key(conn, organisation=org, key=key)
        if earlier is not None:
            # A redelivery: the run it started, whatever version is live now.
            answer = DeliveryAnswer(202, {"run_id": earlier.id, "delivery": delivery, "redelivery": True})
            return await self._answer(hook, delivery, answer, outcome="redelivery", run_id=earlier.id)
        if len(encode_task_args(args)) > MAX_TASK_ARGS_BYTES:
            problem = f"the payload is over {MAX_TASK_ARGS_BYTES} bytes as task arguments (compact ASCII JSON)"
            return await self._answer(hook, delivery, DeliveryAnswer(413, {"error": problem}))
        try:
            checked = RunSpec.model_validate({**hook.spec.model_dump(), "args": args})
            spec = with_args(hook.spec, checked.args)
        except (ValidationError, RecursionError) as exc:
            # The first problem's message alone: its location in a deeply nested payload could be kilobytes long.
            why = exc.errors()[0]["msg"][:200] if isinstance(exc, ValidationError) else "it nests too deeply"
            problem = f"the payload cannot be task arguments: {why}"
            return await self._answer(hook, delivery, DeliveryAnswer(422, {"error": problem}))
        principal = Principal.trigger(org, "webhook")
        try:
            run = await self._runs.submit(principal, spec, trigger=TriggerKind.WEBHOOK, idempotency_key=key)
        except Conflict:
            # The same delivery raced in and started its run from another version: that run is the answer.
            async with self._rt.pool.acquire() as conn:
                found = await runs_repo.find_by_idempotency_key(conn, organisation=org, key=key)
            if found is None:
                raise
            run = found
        except InvalidRequest as exc:
            return await self._answer(hook, delivery, DeliveryAnswer(422, {"error": str(exc)}))
        self._accepted.add(1)
        answer = DeliveryAnswer(202, {"run_id": run.id, "delivery": delivery, "redelivery": False})
        return await self._answer(hook, delivery, answer, outcome="run started", run_id=run.id)

    async def _answer(
        self, hook: repo.Hook, delivery: str, answer: DeliveryAnswer, *, outcome: str = "", run_id: str | None = None
    ) -> DeliveryAnswer:
        """Record the delivery against its hook, then give the answer."""
        async with self._rt.pool.acquire() as conn:
            await repo.record_delivery(
                conn,
                organisation=hook.organisation,
                project=hook.project,
                task=hook.task,
                delivery_id=delivery,
                status=answer.status,
                outcome=outcome or str(answer.body.get("error", ""))[:500],
                run_id=run_id,
                keep=self._settings.deliveries_kept,
            )
        return answer

    def public_base(self) -> str:
        """The REST URL senders reach, for the URLs of hooks (task webhooks, git sources' push hooks)."""
        return (self._settings.public_url or self.rest_url).rstrip("/")

    def hook_url(self, organisation: str, project: str, task: str) -> str:
        return f"{self.public_base()}/v1/hooks/{organisation}/{project}/{task}"

    async def list(
        self, principal: Principal, *, organisation: str | None = None, project: str | None = None
    ) -> list[HookListing]:
        """Each hook of each project's trigger version, with its URL and most recent deliveries."""
        org = organisations.resolve(principal, organisation)
        async with self._rt.pool.acquire() as conn:
            hooks = await repo.list_hooks(conn, organisation=org, project=project or None)
            deliveries = await repo.recent_deliveries(
                conn,
                organisation=org,
                hooks=[(h.project, h.task) for h in hooks],
                per_hook=self._settings.deliveries_kept,
            )
        by_hook: dict[tuple[str, str], list[DeliveryRecord]] = {}
        for d in deliveries:
            by_hook.setdefault((d.project, d.task), []).append(
                DeliveryRecord(d.delivery_id, d.received_at, d.status, d.outcome, d.run_id)
            )
        return [
            HookListing(
                project=h.project,
                task=h.task,
                url=self.hook_url(org, h.project, h.task),
                secret_name=h.secret_name,
                version_id=h.version_id,
                deliveries=by_hook.get((h.project, h.task), []),
            )
            for h in hooks
        ]
