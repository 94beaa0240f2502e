"""Finding and ending the process group of a local run whose launcher died.

A process group id alone is not proof: after a crash the id may belong to something else by the time a
reconciler looks. So a group is killed only on the machine and boot it was recorded on, and only if its
leader still carries the run's AME_RUN_ID in its environment.
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessPlace:
    host: str
    boot_id: str


def this_machine() -> ProcessPlace:
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = ""
    return ProcessPlace(socket.gethostname(), boot_id)


def kill_orphaned_group(*, pgid: int, run_id: str, recorded: ProcessPlace, here: ProcessPlace) -> bool:
    """SIGKILL the run's process group if it provably is still that run's; True if a group was killed."""
    if not recorded.boot_id or recorded != here or pgid <= 1:
        return False
    try:
        environ = Path(f"/proc/{pgid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    if f"AME_RUN_ID={run_id}".encode() not in environ:
        return False
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True
