"""Resources on the local backend as `ame task run -l` sees them: whole GPUs shared host-wide between separate
CLI processes (a pretend two-GPU host, AME_GPUS=0,1), memory limits enforced, images and impossible GPU counts
refused, cpu a share."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ame.runner.home import AmeHome
from ame.runner.memory_limits import cgroup_memory_available
from ame.runner.process import ProcessSpec, capture_process

from .support import ProjectFactory

GPU_PROJECT = """
tasks:
  - name: one_gpu
    executor: !custom
      command: >-
        echo "gpu=$CUDA_VISIBLE_DEVICES nv=$NVIDIA_VISIBLE_DEVICES";
        while [ ! -e release ]; do sleep 0.05; done
    resources: {nvidia.com/gpu: 1}
  - name: both_gpus
    executor: !custom
      command: >-
        echo "pgid=$$";
        while [ ! -e release ]; do sleep 0.05; done
    resources: {nvidia.com/gpu: 2}
  - name: three_gpus
    executor: !custom
      command: 'echo should not run'
    resources: {nvidia.com/gpu: 3}
  - name: no_gpu
    executor: !custom
      command: 'echo "gpu=[$CUDA_VISIBLE_DEVICES]"'
  - name: in_image
    executor: !custom
      command: 'echo should not run'
      image: python:3.12
  - name: many_cpus
    executor: !custom
      command: 'echo ran'
    resources: {cpu: 512}
  - name: big_gpu
    executor: !custom
      command: 'echo "gpu=$CUDA_VISIBLE_DEVICES"'
    resources: {gpus: 1, vram: 40Gi}
  - name: a100
    executor: !custom
      command: 'echo "gpu=$CUDA_VISIBLE_DEVICES"'
    resources: {gpus: 1, gpuModel: NVIDIA-A100-SXM4-80GB}
  - name: vram_only
    executor: !custom
      command: 'echo should not run'
    resources: {vram: 40Gi}
"""

# Written bytes, not a zeroed buffer: the pages must really be resident to count.
ALLOCATE_PY = """
import sys, time
held = b"x" * (int(sys.argv[1]) << 20)
time.sleep(1.5)
print("allocated", sys.argv[1])
"""

MEMORY_PROJECT = f"""
tasks:
  - name: greedy
    executor: !custom
      command: {sys.executable} allocate.py 400
    resources: {{memory: 100Mi}}
  - name: modest
    executor: !custom
      command: {sys.executable} allocate.py 20
    resources: {{memory: 100Mi}}
"""


def _ame(project: Path, task: str, home: AmeHome, **env: str) -> subprocess.Popen[str]:
    ame = Path(sys.executable).with_name("ame")
    environ = {**os.environ, "AME_HOME": str(home.root), "AME_GPUS": "0,1", **env}
    return subprocess.Popen(
        [str(ame), "task", "run", "-l", task, "-p", str(project)],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition: object, what: str, deadline: float = 30.0) -> None:
    assert callable(condition)
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


class _Lines:
    """Reads a pipe line by line in the background so a test can wait for one."""

    def __init__(self, proc: subprocess.Popen[str], stream: str) -> None:
        import threading

        self.lines: list[str] = []
        pipe = proc.stdout if stream == "stdout" else proc.stderr
        assert pipe is not None

        def pump() -> None:
            for line in pipe:
                self.lines.append(line.rstrip("\n"))

        threading.Thread(target=pump, daemon=True).start()

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)


@pytest.mark.slow
def test_one_gpu_runs_in_separate_cli_processes_get_disjoint_devices_and_a_third_waits(
    ame_home: AmeHome, make_project: ProjectFactory
) -> None:
    project = make_project(GPU_PROJECT)
    procs = []
    try:
        first, second = _ame(project, "one_gpu", ame_home), _ame(project, "one_gpu", ame_home)
        procs += [first, second]
        outs = [_Lines(first, "stdout"), _Lines(second, "stdout")]
        _wait_for(lambda: all(o.has("gpu=") for o in outs), "both runs to start")
        seen = [next(line for line in o.lines if line.startswith("gpu=")) for o in outs]
        devices = sorted(line.split()[0].removeprefix("gpu=") for line in seen)
        assert devices == ["0", "1"], seen
        assert all(line.split()[1] == "nv=" + line.split()[0].removeprefix("gpu=") for line in seen)

        third = _ame(project, "one_gpu", ame_home)
        procs.append(third)
        third_out, third_err = _Lines(third, "stdout"), _Lines(third, "stderr")
        _wait_for(lambda: third_err.has("waiting for 1 GPU, 0 of 2 free"), "the third run to say why it waits")
        assert not third_out.has("gpu=")

        (project / "release").touch()
        assert first.wait(timeout=30) == 0
        assert second.wait(timeout=30) == 0
        assert third.wait(timeout=30) == 0
        assert third_out.has("gpu=0") or third_out.has("gpu=1")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_gpus_stay_taken_while_a_killed_clis_run_lives_and_free_up_when_it_is_gone(
    ame_home: AmeHome, make_project: ProjectFactory
) -> None:
    project = make_project(GPU_PROJECT)
    procs = []
    try:
        holder = _ame(project, "both_gpus", ame_home)
        procs.append(holder)
        holder_out = _Lines(holder, "stdout")
        _wait_for(lambda: holder_out.has("pgid="), "the holder to start")
        pgid = int(next(line for line in holder_out.lines if line.startswith("pgid=")).removeprefix("pgid="))
        holder.kill()  # the CLI dies; its run's processes, in their own session, go on
        holder.wait()

        waiter = _ame(project, "one_gpu", ame_home)
        procs.append(waiter)
        waiter_out, waiter_err = _Lines(waiter, "stdout"), _Lines(waiter, "stderr")
        _wait_for(lambda: waiter_err.has("waiting for 1 GPU, 0 of 2 free"), "the next run to wait")

        os.killpg(pgid, signal.SIGKILL)  # the last process holding the devices is gone
        _wait_for(lambda: waiter_out.has("gpu="), "the next run to get a GPU")
        (project / "release").touch()
        assert waiter.wait(timeout=30) == 0
    finally:
        (project / "release").touch()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_more_gpus_than_the_host_has_is_refused(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    project = make_project(GPU_PROJECT)
    proc = _ame(project, "three_gpus", ame_home)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "three_gpus: the task asks for 3 GPUs and this host has 2 GPUs" in err
    assert "should not run" not in out


def test_a_malformed_gpu_list_is_a_clear_error(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    project = make_project(GPU_PROJECT)
    proc = _ame(project, "no_gpu", ame_home, AME_GPUS="0,0")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "GPU list '0,0' names a device twice" in err
    assert "Traceback" not in err
    assert out == ""


def test_a_task_without_gpus_sees_none_on_a_gpu_host(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    project = make_project(GPU_PROJECT)
    proc = _ame(project, "no_gpu", ame_home)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert out == "gpu=[]\n"


def test_an_image_is_refused_by_the_local_backend(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    project = make_project(GPU_PROJECT)
    proc = _ame(project, "in_image", ame_home)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "in_image: the task names the container image 'python:3.12'" in err
    assert "should not run" not in out


def test_cpu_beyond_the_host_is_a_share_with_a_note(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    project = make_project(GPU_PROJECT)
    proc = _ame(project, "many_cpus", ame_home)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert out == "ran\n"
    assert f"asks for 512 CPUs and this host has {os.cpu_count()}" in err


_MECHANISMS = [
    "watchdog",
    pytest.param(
        "cgroup",
        marks=pytest.mark.skipif(not cgroup_memory_available(), reason="this host lets us make no memory cgroup"),
    ),
]


@pytest.mark.parametrize("mechanism", _MECHANISMS)
def test_memory_limit_ends_a_greedy_task_and_spares_a_modest_one(
    ame_home: AmeHome, make_project: ProjectFactory, mechanism: str
) -> None:
    project = make_project(MEMORY_PROJECT, {"allocate.py": ALLOCATE_PY})
    greedy = _ame(project, "greedy", ame_home, AME_MEMORY_ENFORCEMENT=mechanism)
    out, err = greedy.communicate(timeout=60)
    assert greedy.returncode == 137, err
    assert "exceeded its memory limit of 100Mi" in err
    assert "allocated" not in out

    modest = _ame(project, "modest", ame_home, AME_MEMORY_ENFORCEMENT=mechanism)
    out, err = modest.communicate(timeout=60)
    assert modest.returncode == 0, err
    assert out == "allocated 20\n"


@pytest.mark.parametrize("mechanism", _MECHANISMS)
async def test_memory_limit_counts_the_whole_process_group(tmp_path: Path, mechanism: str) -> None:
    # The shell stays small; its child is the one that grows.
    (tmp_path / "allocate.py").write_text(ALLOCATE_PY)
    code = f"{sys.executable} allocate.py 300; echo survived"
    outcome = (
        await capture_process(
            ProcessSpec(
                argv=["/bin/sh", "-c", code],
                cwd=tmp_path,
                env=dict(os.environ),
                memory_limit_bytes=100 << 20,
                memory_enforcement="cgroup" if mechanism == "cgroup" else "watchdog",
            )
        )
    ).outcome
    assert outcome.state == "failed"
    assert outcome.exit_code == 137
    assert outcome.reason == "exceeded its memory limit of 100Mi"


def test_vram_and_gpu_model_pick_a_device_that_has_them(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    """Seed 003 writes `gpus: 1, vram: 24Gi`: only a device with that much memory is handed out. The pretend host
    has a 16Gi GPU 0 and an 80Gi A100 as GPU 1, described by AME_GPU_MEMORY and AME_GPU_MODEL."""
    project = make_project(GPU_PROJECT)
    # An nvidia-smi that knows nothing, so the host is what the settings say even where a real one is installed.
    stub = ame_home.root / "stub-bin"
    stub.mkdir(parents=True)
    (stub / "nvidia-smi").write_text("#!/bin/sh\nexit 9\n")
    (stub / "nvidia-smi").chmod(0o755)
    path = {"PATH": f"{stub}{os.pathsep}{os.environ.get('PATH', '')}"}
    host = {"AME_GPU_MEMORY": "0=16Gi,1=80Gi", "AME_GPU_MODEL": "0=Tesla T4,1=NVIDIA A100-SXM4-80GB", **path}
    for task in ("big_gpu", "a100"):
        proc = _ame(project, task, ame_home, **host)
        out, err = proc.communicate(timeout=30)
        assert (proc.returncode, out.splitlines()) == (0, ["gpu=1"]), err
        assert f"{task}: using GPU 1" in err

    # Memory no device has, or nobody knows: refused, saying what the host has and how to describe it.
    proc = _ame(project, "big_gpu", ame_home, AME_GPU_MEMORY="16Gi", **path)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "should not run" not in out
    assert (
        "big_gpu: the task asks for 1 GPU with at least 40Gi of memory and this host has 2 GPUs, none of that kind "
        "(0: model unknown, 16Gi, 1: model unknown, 16Gi)"
    ) in err, err
    proc = _ame(project, "big_gpu", ame_home, **path)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "none of that kind (0: model unknown, memory unknown, 1: model unknown, memory unknown); where " in err
    assert "nvidia-smi cannot tell, AME_GPU_MEMORY describes them" in err, err

    # vram without gpus describes GPUs the task does not ask for; a malformed description is a clear error.
    proc = _ame(project, "vram_only", ame_home)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "should not run" not in out
    assert "vram_only: vram and gpuModel say what kind of GPU the task needs, and it asks for none" in err, err
    proc = _ame(project, "no_gpu", ame_home, AME_GPU_MEMORY="2=16Gi")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and out == ""
    assert "AME_GPU_MEMORY" in err and "'2=16Gi': expected DEVICE=VALUE with one of this host's GPUs (0, 1)" in err
    assert "Traceback" not in err
