"""`ame server` in a temporary AME home, for the benchmarks that measure the embedded default end to end."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class ServerDidNotStart(RuntimeError):
    """`ame server` exited or wrote no server.json in time; its log is in the message."""


@contextmanager
def embedded_server(
    home: Path, env: dict[str, str], *, profile: Path | None = None, stop_timeout: float = 120
) -> Iterator[dict[str, Any]]:
    """Start `ame server` (free ports) with AME_HOME=`home` and yield its server.json; SIGINT it on the way out,
    as Ctrl-C does, and wait for it to stop."""
    home.mkdir(parents=True, exist_ok=True)
    info_file = home / "server" / "server.json"
    log_path = home / "server.log"
    cprofile = ["-m", "cProfile", "-o", str(profile)] if profile else []
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, *cprofile, "-m", "ame.cli.main", "server", "--rest-port", "0", "--grpc-port", "0"],
            stdout=log,
            stderr=log,
            env=env | {"AME_HOME": str(home)},
        )
        try:
            deadline = time.monotonic() + 60
            while not info_file.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise ServerDidNotStart(log_path.read_text())
                time.sleep(0.05)
            yield json.loads(info_file.read_text())
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=stop_timeout)


def server_token(info: dict[str, Any]) -> str:
    """The server-admin token `ame server` wrote beside server.json on its first start."""
    return (Path(info["data_dir"]) / "admin-token").read_text().strip()
