"""How old a finished pod is, for garbage collection: pods without a main container end (an init container that
failed, an eviction before the task started) are as old as their object says, never taken as long finished."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ame_launcher.kubernetes.backend import finished_age
from ame_launcher.kubernetes.podlogs import rfc3339

NOW = time.time()


def _at(seconds_ago: float) -> str:
    return rfc3339(int((NOW - seconds_ago) * 1e9))


def _init_failed(ended: str) -> dict[str, Any]:
    # As the kubelet leaves it: the fetch container ended in error, the main container never ran.
    return {
        "metadata": {"name": "ame-r-1", "creationTimestamp": _at(7200)},
        "status": {
            "phase": "Failed",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": _at(7100)}],
            "initContainerStatuses": [
                {"name": "fetch", "state": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ended}}}
            ],
        },
    }


def _evicted(changed: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "ame-r-1", "creationTimestamp": _at(7200)},
        "status": {
            "phase": "Failed",
            "reason": "Evicted",
            "message": "The node was low on resource: memory.",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": _at(7100)},
                {"type": "Ready", "status": "False", "lastTransitionTime": changed},
            ],
        },
    }


@pytest.mark.parametrize(
    ("pod", "age"),
    [
        (_init_failed(_at(10)), 10),
        (_evicted(_at(20)), 20),
        ({"metadata": {"name": "ame-r-1", "creationTimestamp": _at(30)}, "status": {"phase": "Failed"}}, 30),
    ],
    ids=["init-container-failed", "evicted", "creation-only"],
)
def test_a_pod_without_a_main_container_end_is_as_old_as_its_newest_change(pod: dict[str, Any], age: float) -> None:
    found = finished_age(pod, NOW)
    assert found is not None
    assert found == pytest.approx(age, abs=0.01)


def test_a_pod_that_does_not_say_when_it_ended_has_no_age() -> None:
    assert finished_age({"metadata": {"name": "ame-r-1"}, "status": {"phase": "Failed"}}, NOW) is None
