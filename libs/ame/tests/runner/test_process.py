"""run_process: exit codes, stream separation, timeouts, cancellation, no survivors, masking."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ame.runner.process import MAX_LINE_BYTES, ProcessSpec, StreamName, run_process


class RecordingSink:
    def __init__(self) -> None:
        self.pid: int | None = None
        self.lines: list[tuple[StreamName, str]] = []
        self.started_event = asyncio.Event()

    async def started(self, pid: int) -> None:
        self.pid = pid
        self.started_event.set()

    async def line(self, stream: StreamName, text: str) -> None:
        self.lines.append((stream, text))

    def of(self, stream: StreamName) -> list[str]:
        return [text for name, text in self.lines if name == stream]


def _sh(
    command: str,
    tmp_path: Path,
    *,
    timeout_seconds: float | None = None,
    grace_seconds: float = 10.0,
    secret_values: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> ProcessSpec:
    return ProcessSpec(
        argv=["/bin/sh", "-c", command],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], **(extra_env or {})},
        timeout_seconds=timeout_seconds,
        grace_seconds=grace_seconds,
        secret_values=secret_values,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def _eventually(condition: Callable[[], bool], deadline_seconds: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.02)


async def _read_pids(path: Path, count: int) -> list[int]:
    def ready() -> bool:
        return path.exists() and len(path.read_text().split()) >= count

    await _eventually(ready)
    return _pids_in(path)


def _pids_in(path: Path) -> list[int]:
    return [int(pid) for pid in path.read_text().split()]


def _same_dir(a: str, b: Path) -> bool:
    return Path(a).resolve() == b.resolve()


async def test_success_and_stream_separation(tmp_path: Path) -> None:
    sink = RecordingSink()
    command = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done; printf tail"
    outcome = await run_process(_sh(command, tmp_path), sink)
    assert outcome.state == "succeeded"
    assert outcome.exit_code == 0
    assert outcome.started_at <= outcome.finished_at
    assert sink.pid is not None
    assert sink.of("stdout") == ["out1", "out2", "out3", "out4", "out5", "tail"]
    assert sink.of("stderr") == ["err1", "err2", "err3", "err4", "err5"]


async def test_exit_code_is_reported(tmp_path: Path) -> None:
    outcome = await run_process(_sh("exit 3", tmp_path), RecordingSink())
    assert outcome.state == "failed"
    assert outcome.exit_code == 3
    assert outcome.reason == "exited with code 3"


async def test_signal_death_uses_shell_convention(tmp_path: Path) -> None:
    outcome = await run_process(_sh("kill -9 $$", tmp_path), RecordingSink())
    assert outcome.state == "failed"
    assert outcome.exit_code == 128 + 9
    assert outcome.reason is not None
    assert "SIGKILL" in outcome.reason


async def test_missing_executable_fails_with_127(tmp_path: Path) -> None:
    spec = ProcessSpec(argv=[str(tmp_path / "nope")], cwd=tmp_path, env={})
    sink = RecordingSink()
    outcome = await run_process(spec, sink)
    assert outcome.state == "failed"
    assert outcome.exit_code == 127
    assert sink.pid is None


async def test_env_and_cwd_are_the_childs(tmp_path: Path) -> None:
    sink = RecordingSink()
    spec = ProcessSpec(
        argv=[sys.executable, "-c", "import os; print(os.getcwd()); print(sorted(os.environ))"],
        cwd=tmp_path,
        env={"ONLY_THIS": "1"},
    )
    outcome = await run_process(spec, sink)
    assert outcome.state == "succeeded", sink.lines
    cwd, keys = sink.of("stdout")
    assert _same_dir(cwd, tmp_path)
    assert "ONLY_THIS" in keys
    assert "HOME" not in keys


async def test_long_lines_are_split_and_utf8_is_kept_whole(tmp_path: Path) -> None:
    sink = RecordingSink()
    # 'é' is two bytes, so a naive cut at 64 KiB would land inside a character.
    code = "import sys; sys.stdout.write('a' + 'é' * 70000 + '\\nshort\\n')"
    spec = ProcessSpec(argv=[sys.executable, "-c", code], cwd=tmp_path, env={})
    outcome = await run_process(spec, sink)
    assert outcome.state == "succeeded"
    lines = sink.of("stdout")
    assert lines[-1] == "short"
    assert all(len(line.encode()) <= MAX_LINE_BYTES for line in lines)
    assert "".join(lines[:-1]) == "a" + "é" * 70000
    assert "\ufffd" not in "".join(lines)


async def test_secret_values_are_masked(tmp_path: Path) -> None:
    sink = RecordingSink()
    spec = _sh(
        'echo "token=$T"; echo "again $T" >&2; echo "line2 only"',
        tmp_path,
        secret_values=("s3cr3t-value", "line1\nline2 only"),
        extra_env={"T": "s3cr3t-value"},
    )
    outcome = await run_process(spec, sink)
    assert outcome.state == "succeeded"
    assert sink.of("stdout") == ["token=***", "***"]
    assert sink.of("stderr") == ["again ***"]


@pytest.mark.parametrize("offset", [1, 3, 6, 11])
async def test_a_secret_across_the_long_line_cut_is_still_masked(tmp_path: Path, offset: int) -> None:
    secret = "SuperSecret-42"
    sink = RecordingSink()
    # The secret starts `offset` bytes before the 64 KiB cut, so a naive cut prints it in two halves.
    code = f"import sys; sys.stdout.write('a' * ({MAX_LINE_BYTES} - {offset}) + {secret!r} + 'tail\\n')"
    spec = ProcessSpec(argv=[sys.executable, "-c", code], cwd=tmp_path, env={}, secret_values=(secret,))
    outcome = await run_process(spec, sink)
    assert outcome.state == "succeeded"
    joined = "".join(sink.of("stdout"))
    assert secret[:offset] not in joined.replace("a", "")
    assert joined == "a" * (MAX_LINE_BYTES - offset) + "***tail"


async def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    sink = RecordingSink()
    spec = _sh(
        f"sleep 100 & echo $! >> {pids}; sleep 100 & echo $! >> {pids}; wait",
        tmp_path,
        timeout_seconds=1.0,
        grace_seconds=1.0,
    )
    task = asyncio.create_task(run_process(spec, sink))
    children = await _read_pids(pids, 2)
    outcome = await task
    assert outcome.state == "timed_out"
    # sh dies of SIGTERM; 128 + 15.
    assert outcome.exit_code == 143
    assert sink.pid is not None
    await _eventually(lambda: not any(_alive(pid) for pid in [*children, sink.pid or 0]))


async def test_grace_then_sigkill_for_a_child_ignoring_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    spec = _sh(f"trap '' TERM; touch {ready}; while :; do sleep 0.1; done", tmp_path, grace_seconds=0.3)
    cancel = asyncio.Event()
    task = asyncio.create_task(run_process(spec, RecordingSink(), cancel=cancel))
    await _eventually(ready.exists)
    cancel.set()
    outcome = await task
    assert outcome.state == "cancelled"
    assert outcome.exit_code == 128 + 9


async def test_cancel_event_terminates(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    cancel = asyncio.Event()
    sink = RecordingSink()
    task = asyncio.create_task(run_process(_sh(f"sleep 100 & echo $! > {pids}; wait", tmp_path), sink, cancel=cancel))
    (child,) = await _read_pids(pids, 1)
    cancel.set()
    outcome = await task
    assert outcome.state == "cancelled"
    assert outcome.reason == "cancelled"
    await _eventually(lambda: not _alive(child))


async def test_leftover_background_children_are_killed_after_normal_exit(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # The background sleep keeps stdout open; the runner must not wait for it nor leave it alive.
    outcome = await run_process(
        _sh(f"sleep 100 > /dev/null 2>&1 & echo $! > {pids}; echo done", tmp_path), RecordingSink()
    )
    assert outcome.state == "succeeded"
    (child,) = _pids_in(pids)
    await _eventually(lambda: not _alive(child))


async def test_cancelling_the_awaiting_task_kills_the_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    sink = RecordingSink()
    task = asyncio.create_task(run_process(_sh(f"sleep 100 & echo $! > {pids}; wait", tmp_path), sink))
    (child,) = await _read_pids(pids, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    leader = sink.pid
    assert leader is not None
    await _eventually(lambda: not _alive(child) and not _alive(leader))


async def test_output_before_exit_is_not_lost_under_volume(tmp_path: Path) -> None:
    sink = RecordingSink()
    outcome = await run_process(_sh("seq 1 20000; seq 1 5000 >&2", tmp_path), sink)
    assert outcome.state == "succeeded"
    assert sink.of("stdout") == [str(i) for i in range(1, 20001)]
    assert sink.of("stderr") == [str(i) for i in range(1, 5001)]


async def test_a_sink_slower_than_the_process_still_gets_its_last_lines(tmp_path: Path) -> None:
    # The process exits with up to a pipe's worth of output (64 KiB, ~650 of these lines) not yet read, while
    # the sink takes a few ms a line (the bus is behind a chatty run): handing that tail on takes longer than
    # the wait for an escaped process's pipe, and must not be cut off by it.
    class SlowSink(RecordingSink):
        async def line(self, stream: StreamName, text: str) -> None:
            await asyncio.sleep(0.005)
            await super().line(stream, text)

    sink = SlowSink()
    command = "i=0; while [ $i -lt 1000 ]; do printf '%0100d\\n' $i; i=$((i+1)); done"
    outcome = await run_process(_sh(command, tmp_path), sink)

    assert outcome.state == "succeeded"
    assert sink.of("stdout") == [f"{i:0100d}" for i in range(1000)]
