"""Reading a pod's status: how far it got, and, when it ended or is stuck, the reason a user can act on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ame.domain import RunState
from ame_launcher.kubernetes.manifests import FETCH, MAIN

_PULL_FAILURES = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})
# Waiting reasons that never resolve by themselves: the pod is failed at once.
_HOPELESS = frozenset({"InvalidImageName", "CreateContainerConfigError", "CreateContainerError", "RunContainerError"})
# Pod-level reasons for a pod whose node went away.
_NODE_GONE = frozenset({"NodeLost", "NodeShutdown", "Terminated"})


@dataclass(frozen=True)
class Outcome:
    state: RunState
    exit_code: int | None
    reason: str


@dataclass(frozen=True)
class Progress:
    """What a pod that has not ended is doing: started (its main container ran), or stuck and why."""

    started: bool
    unschedulable: str | None = None
    image_pull: str | None = None
    hopeless: str | None = None


def _container(pod: dict[str, Any], name: str, *, init: bool = False) -> dict[str, Any]:
    key = "initContainerStatuses" if init else "containerStatuses"
    for status in (pod.get("status") or {}).get(key) or []:
        if status.get("name") == name:
            return dict(status)
    return {}


def _memory_limit(pod: dict[str, Any]) -> str | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == MAIN:
            limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
            return str(limit) if limit else None
    return None


def progress(pod: dict[str, Any]) -> Progress:
    status = pod.get("status") or {}
    main = _container(pod, MAIN)
    started = status.get("phase") in ("Running", "Succeeded", "Failed") or bool(
        (main.get("state") or {}).get("running") or (main.get("state") or {}).get("terminated")
    )
    unschedulable = None
    for condition in status.get("conditions") or []:
        scheduled = condition.get("type") == "PodScheduled" and condition.get("status") == "False"
        if scheduled and condition.get("reason") == "Unschedulable":
            unschedulable = str(condition.get("message") or "no node fits the pod")
    image_pull = hopeless = None
    for container in [_container(pod, FETCH, init=True), main]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in _PULL_FAILURES:
            image_pull = f"{reason}: {waiting.get('message') or container.get('image') or ''}".rstrip(": ")
        if reason in _HOPELESS:
            hopeless = f"{reason}: {waiting.get('message') or ''}".rstrip(": ")
    return Progress(started=started, unschedulable=unschedulable, image_pull=image_pull, hopeless=hopeless)


def outcome(pod: dict[str, Any]) -> Outcome | None:
    """How the pod ended, or None while it runs."""
    status = pod.get("status") or {}
    phase = status.get("phase")
    reason = str(status.get("reason") or "")
    message = str(status.get("message") or "")
    if phase == "Succeeded":
        return Outcome(RunState.SUCCEEDED, 0, "")
    if phase != "Failed":
        return None
    if reason == "DeadlineExceeded":
        return Outcome(RunState.TIMED_OUT, 124, "the run exceeded its timeout (activeDeadlineSeconds)")
    if reason == "Evicted":
        return Outcome(RunState.FAILED, None, f"Evicted: {message or 'the node ran short of resources'}")
    if reason in _NODE_GONE:
        return Outcome(RunState.LOST, None, f"the pod's node went away ({reason}){': ' + message if message else ''}")
    init = _container(pod, FETCH, init=True)
    init_end = (init.get("state") or {}).get("terminated") or {}
    if init_end and init_end.get("exitCode") not in (0, None):
        return Outcome(RunState.FAILED, None, f"the run's files could not be fetched (exit {init_end.get('exitCode')})")
    main_end = (_container(pod, MAIN).get("state") or {}).get("terminated") or {}
    code = main_end.get("exitCode")
    exit_code = int(code) if isinstance(code, int) else None
    if main_end.get("reason") == "OOMKilled":
        limit = _memory_limit(pod)
        named = f"its memory limit of {limit}" if limit else "the memory available to it"
        return Outcome(RunState.FAILED, exit_code, f"OOMKilled: the task used more than {named}")
    if exit_code is not None:
        return Outcome(RunState.FAILED, exit_code, f"exited with code {exit_code}")
    return Outcome(RunState.FAILED, None, f"the pod failed: {reason or 'no reason given'} {message}".strip())


def finished_at(pod: dict[str, Any]) -> str | None:
    main_end = (_container(pod, MAIN).get("state") or {}).get("terminated") or {}
    value = main_end.get("finishedAt")
    return str(value) if value else None


def ended_at(pod: dict[str, Any]) -> str | None:
    """When a finished pod ended, as best its object tells: its main container's end; else (an init container that
    failed, an eviction: no main container end) the newest container end or condition change; else its creation."""
    if main := finished_at(pod):
        return main
    status = pod.get("status") or {}
    seen: list[str] = []
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(key) or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            seen.append(str(terminated.get("finishedAt") or ""))
    seen.extend(str(condition.get("lastTransitionTime") or "") for condition in status.get("conditions") or [])
    # RFC 3339 in UTC ("...Z") sorts as text in time order.
    if newest := max((value for value in seen if value), default=""):
        return newest
    created = (pod.get("metadata") or {}).get("creationTimestamp")
    return str(created) if created else None
