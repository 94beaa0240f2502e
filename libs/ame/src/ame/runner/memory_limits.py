"""Memory limits for a run's process group: a cgroup where the host lets us make one, else an RSS watchdog.

A cgroup (v2 `memory.max`, or v1 `memory.limit_in_bytes` where memory is still on v1) is exact: the kernel's
OOM killer ends the run the moment it goes over, and every process it forks is counted, even one that leaves
the process group. Creating one needs write access to our own cgroup (root, or a delegated subtree); without
it, a watchdog sums the resident memory of the run's process group a few times a second and kills the group
when the sum goes over. The watchdog can be late by one poll and does not see processes that escape the group
(setsid), which is why the cgroup is preferred.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ame.domain.quantities import format_bytes

__all__ = [
    "MemoryEnforcement",
    "MemoryGuard",
    "cgroup_memory_available",
    "open_memory_guard",
    "over_limit_reason",
]

MemoryEnforcement = Literal["auto", "cgroup", "watchdog"]

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_WATCHDOG_POLL = 0.1
_PAGE = os.sysconf("SC_PAGE_SIZE")


def over_limit_reason(limit_bytes: int) -> str:
    return f"exceeded its memory limit of {format_bytes(limit_bytes)}"


class MemoryGuard:
    """One run's limit. `wrap` the argv before spawning, `watch` the group once it runs, `close` at the end."""

    def __init__(self, limit_bytes: int, mechanism: str, cgroup: Path | None = None, version: int = 0) -> None:
        self.limit_bytes = limit_bytes
        self.mechanism = mechanism
        self._cgroup = cgroup
        self._version = version
        self._tripped = False
        self._watchdog: asyncio.Task[None] | None = None

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """The command, made to join the cgroup before it execs (so nothing it allocates escapes the count)."""
        if self._cgroup is None:
            return list(argv)
        procs = str(self._cgroup / "cgroup.procs")
        return ["/bin/sh", "-c", 'echo $$ > "$1" && shift && exec "$@"', "ame-memory-limit", procs, *argv]

    def watch(self, pgid: int) -> None:
        """Once the run is spawned: end its whole group when it goes over (the kernel's OOM killer alone would
        end only the biggest process, and a shell around it would carry on as if nothing happened)."""
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self._watch(pgid), name=f"memory-watchdog:{pgid}")

    def exceeded(self) -> bool:
        """Whether the run was ended for going over its limit."""
        if self._tripped:
            return True
        if self._cgroup is None:
            return False
        events = "memory.events" if self._version == 2 else "memory.oom_control"
        return _read_counter(self._cgroup / events, "oom_kill") > 0

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self._cgroup is not None:
            await asyncio.to_thread(_remove_cgroup, self._cgroup)

    async def _watch(self, pgid: int) -> None:
        while True:
            if self._cgroup is not None:
                over = await asyncio.to_thread(self.exceeded)
            else:
                over = await asyncio.to_thread(group_rss_bytes, pgid) > self.limit_bytes
            if over:
                self._tripped = True
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
                return
            await asyncio.sleep(_WATCHDOG_POLL)


def open_memory_guard(limit_bytes: int, mode: MemoryEnforcement = "auto") -> MemoryGuard:
    """A guard for `limit_bytes`: a fresh cgroup where possible (`auto`, `cgroup`), else the watchdog.

    `cgroup` raises OSError when no cgroup can be made, for callers that must not fall back silently.
    """
    if mode != "watchdog":
        try:
            return _cgroup_guard(limit_bytes)
        except OSError:
            if mode == "cgroup":
                raise
    return MemoryGuard(limit_bytes, "watchdog")


def cgroup_memory_available() -> bool:
    """Whether this process can make memory-limited cgroups (tests use it to pick what they can check)."""
    try:
        guard = _cgroup_guard(64 * 1024 * 1024)
    except OSError:
        return False
    if guard._cgroup is not None:
        _remove_cgroup(guard._cgroup)
    return True


def _cgroup_guard(limit_bytes: int) -> MemoryGuard:
    parent, version = _own_memory_cgroup()
    child = parent / f"ame-{uuid.uuid4().hex[:12]}"
    child.mkdir()
    try:
        if version == 2:
            (child / "memory.max").write_text(str(limit_bytes))
            with contextlib.suppress(OSError):
                (child / "memory.oom.group").write_text("1")
            # Without this a run could page out beyond its limit instead of being stopped.
            with contextlib.suppress(OSError):
                (child / "memory.swap.max").write_text("0")
        else:
            (child / "memory.limit_in_bytes").write_text(str(limit_bytes))
            with contextlib.suppress(OSError):
                (child / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
    except OSError:
        _remove_cgroup(child)
        raise
    return MemoryGuard(limit_bytes, f"cgroup v{version}", child, version)


def _own_memory_cgroup() -> tuple[Path, int]:
    """Our own memory cgroup directory and its version; OSError when there is none we can use."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    v1_root = _CGROUP_ROOT / "memory"
    if (v1_root / "memory.limit_in_bytes").exists():
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                own = v1_root / path.lstrip("/")
                return (own if own.is_dir() else v1_root), 1
    controllers_file = _CGROUP_ROOT / "cgroup.controllers"
    if controllers_file.exists() and "memory" in controllers_file.read_text().split():
        for line in lines:
            if line.startswith("0::"):
                own = _CGROUP_ROOT / line[3:].lstrip("/")
                subtree = own / "cgroup.subtree_control"
                # v2 allows children a controller only where the parent enables it for its subtree.
                if own.is_dir() and subtree.exists() and "memory" in subtree.read_text().split():
                    return own, 2
    raise OSError("no memory cgroup this process can create children in")


def _read_counter(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _remove_cgroup(path: Path) -> None:
    # Processes that left the run's group are still in its cgroup: end them, or the cgroup cannot go.
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            with contextlib.suppress(OSError, ValueError):
                for pid in (path / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(int(pid), signal.SIGKILL)
            # A killed process leaves its cgroup only once it has been reaped (by us, or by init for an orphan).
            time.sleep(0.02)


def group_rss_bytes(pgid: int) -> int:
    """The resident memory of every process in group `pgid`, from /proc."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                data = stat.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses; the fields after its last ')' do not.
        fields = data[data.rfind(b")") + 2 :].split()
        # fields[0] is the state (field 3 of stat), so pgrp (field 5) is fields[2] and rss (field 24) fields[21].
        if len(fields) > 21 and int(fields[2]) == pgid:
            total += int(fields[21]) * _PAGE
    return total
