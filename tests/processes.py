"""Process inspection for tests that check nothing outlives its owner (Linux /proc)."""

from __future__ import annotations

from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is parenthesised and may contain spaces; the fields after it are fixed.
    return text.rpartition(")")[2].split()


def pid_alive(pid: int) -> bool:
    """True if `pid` runs; a zombie counts as gone (PID 1 in a container may never reap it)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def live_children(parent_pid: int) -> list[int]:
    """Pids of the live (non-zombie) direct children of `parent_pid`."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        # fields: state, ppid, pgrp, ...
        if fields is not None and fields[0] != "Z" and int(fields[1]) == parent_pid:
            children.append(int(entry.name))
    return children


def live_descendants(pid: int) -> list[int]:
    """Pids of every live process below `pid` (children, their children, ...)."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        children = [c for parent in frontier for c in live_children(parent)]
        found.extend(children)
        frontier = children
    return found


def live_group_members(pgid: int) -> list[int]:
    """Pids of live (non-zombie) processes whose process group is `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        # fields: state, ppid, pgrp, ...
        if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members
