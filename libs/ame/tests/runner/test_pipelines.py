"""Pipelines run locally: order, real parallelism, bounded concurrency, first failure stops all."""

from __future__ import annotations

from ame.runner.console import format_summary
from ame.runner.home import AmeHome
from ame.runner.task_runs import LocalRunner

from .support import ProjectFactory, RecordingOutput, load_task, run_settings

# Each parallel step announces itself and waits (bounded) for its sibling: this only succeeds
# when both really run at the same time.
RENDEZVOUS = """
tasks:
  - name: pipe
    pipeline:
      - name: prepare
        executor: !custom
          command: echo prepared > prepared.txt
      - - name: left
          executor: !custom
            command: >-
              test -e prepared.txt && touch left.up &&
              for i in $(seq 100); do [ -e right.up ] && exit 0; sleep 0.05; done; exit 1
        - name: right
          executor: !custom
            command: 'touch right.up && for i in $(seq 100); do [ -e left.up ] && exit 0; sleep 0.05; done; exit 1'
      - name: finish
        executor: !custom
          command: echo done
"""


async def test_stages_in_order_and_parallel_groups_at_once(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    project = make_project(RENDEZVOUS)
    output = RecordingOutput()
    result = await LocalRunner(run_settings(ame_home, project)).run(load_task(project, "pipe"), output)
    assert result.state == "succeeded", result
    assert [step.name for step in result.steps] == ["prepare", "left", "right", "finish"]
    assert output.of("finish") == ["done"]
    summary = format_summary(result)
    assert summary.splitlines()[0].split() == ["STEP", "STATE", "DURATION", "EXIT", "REASON"]
    assert "finish" in summary


async def test_max_parallel_bounds_concurrency(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    exclusive = "'if [ -e busy ]; then exit 9; fi; touch busy; sleep 0.2; rm busy'"
    project = make_project(
        f"""
        tasks:
          - name: pipe
            pipeline:
              - - {{name: a, executor: !custom {{command: {exclusive}}}}}
                - {{name: b, executor: !custom {{command: {exclusive}}}}}
                - {{name: c, executor: !custom {{command: {exclusive}}}}}
        """
    )
    settings = run_settings(ame_home, project, max_parallel=1)
    result = await LocalRunner(settings).run(load_task(project, "pipe"), RecordingOutput())
    assert [step.state for step in result.steps] == ["succeeded"] * 3


async def test_failure_cancels_siblings_and_skips_the_rest(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    project = make_project(
        """
        tasks:
          - name: pipe
            pipeline:
              - - name: slow
                  executor: !custom
                    command: touch slow.up; sleep 60
                - name: broken
                  executor: !custom
                    command: 'for i in $(seq 200); do [ -e slow.up ] && exit 5; sleep 0.05; done'
              - name: never
                executor: !custom
                  command: touch never.ran
        """
    )
    result = await LocalRunner(run_settings(ame_home, project)).run(load_task(project, "pipe"), RecordingOutput())
    states = {step.name: step.state for step in result.steps}
    assert states == {"slow": "cancelled", "broken": "failed", "never": "skipped"}
    assert result.state == "failed"
    assert result.exit_code == 5
    assert not (project / "never.ran").exists()


async def test_pipeline_timeout(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    project = make_project(
        """
        tasks:
          - name: pipe
            timeout: 1s
            pipeline:
              - name: stuck
                executor: !custom
                  command: sleep 60
              - name: after
                executor: !custom
                  command: echo after
        """
    )
    result = await LocalRunner(run_settings(ame_home, project)).run(load_task(project, "pipe"), RecordingOutput())
    assert result.state == "timed_out"
    assert result.exit_code == 124
    assert [step.state for step in result.steps] == ["cancelled", "skipped"]
