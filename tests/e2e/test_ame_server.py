"""`ame server` as a user starts it: a subprocess with its own NATS and PostgreSQL, driven with the `ame` CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import live_descendants, live_group_members, pid_alive

pytestmark = [pytest.mark.e2e]

AME = [sys.executable, "-m", "ame.cli.main"]


def _deadline_wait(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Server:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.data_dir = home / "server"
        self.log = home / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_env: dict[str, str] = {}

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AME_")}
        env["AME_HOME"] = str(self.home)
        env["AME_CONFIG_DIR"] = str(self.home / "config")  # never the user's own `ame setup` / `ame login`
        env.update(self.extra_env)
        return env

    def start(self) -> dict[str, str]:
        info_file = self.data_dir / "server.json"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*AME, "server", "--rest-port", "0", "--grpc-port", "0"], stdout=log, stderr=log, env=self.env
            )
        _deadline_wait(lambda: info_file.exists() or self.proc.poll() is not None, 60, "server.json")  # type: ignore[union-attr]
        assert self.proc.poll() is None, self.log.read_text()
        return dict(json.loads(info_file.read_text()))

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=60)

    def ame(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.ame_in(None, *args)

    @property
    def token(self) -> str:
        """The server-admin token the server wrote on its first start (what the CLI beside it sends)."""
        return (self.home / "server" / "admin-token").read_text().strip()

    def ame_in(self, cwd: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*AME, *args], capture_output=True, text=True, env=self.env, timeout=60, cwd=cwd)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    yield s
    if s.proc is not None and s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()


def test_runs_through_the_embedded_server_and_restarts_with_its_data(server: Server) -> None:
    server.start()
    assert server.proc is not None

    ok = server.ame(
        "runs",
        "submit",
        "--project",
        "demo",
        "--task",
        "hello",
        "--",
        sys.executable,
        "-c",
        "print('hello from AME')",
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "hello from AME\n"

    failing = server.ame(
        "runs",
        "submit",
        "--",
        sys.executable,
        "-c",
        "import sys; print('bad', file=sys.stderr); sys.exit(3)",
    )
    assert failing.returncode == 3
    assert "bad" in failing.stderr
    assert "failed" in failing.stderr

    empty = server.ame("runs", "submit", "--", " ")
    assert empty.returncode != 0
    assert "command must not be empty" in empty.stderr

    missing = server.ame("runs", "get", "01a1ff6f-0f34-7a07-90d1-1a37af2413eb")
    assert missing.returncode == 1
    assert "not found" in missing.stderr
    assert "Traceback" not in missing.stderr

    # A task of an ame.yml project, run on the server instead of locally (no -l).
    example = Path(__file__).resolve().parents[2] / "examples" / "hello"
    remote = server.ame_in(example, "task", "run", "hello")
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == "hello from hello in the AME examples\n"
    unknown_task = server.ame_in(example, "task", "run", "nope")
    assert unknown_task.returncode == 1 and "no task named 'nope'" in unknown_task.stderr
    assert "Traceback" not in unknown_task.stderr

    listed = json.loads(server.ame("runs", "list", "--json").stdout)
    assert {(r["spec"]["project"], r["spec"]["task"], r["state"]) for r in listed} >= {
        ("demo", "hello", "succeeded"),
        ("hello", "hello", "succeeded"),
    }
    hello_id = next(r["id"] for r in listed if r["spec"]["project"] == "demo")

    # A second server on the same data directory is refused while the first runs.
    second = subprocess.run(
        [*AME, "server", "--rest-port", "0", "--grpc-port", "0"],
        capture_output=True,
        text=True,
        env=server.env,
        timeout=60,
    )
    assert second.returncode == 1
    assert "another `ame server`" in second.stderr

    children = live_descendants(server.proc.pid)
    assert len(children) >= 2  # nats-server and the postgres postmaster at least
    assert server.stop() == 0
    _deadline_wait(lambda: not any(pid_alive(p) for p in children), 30, "every child process to exit")

    # Restart on the same data: the registry and the archived output are still there.
    server.start()
    again = server.ame("runs", "follow", hello_id)
    assert again.returncode == 0
    assert again.stdout == "hello from AME\n"
    assert server.stop() == 0


def test_a_crashed_server_leaves_no_run_behind_after_restart(server: Server, tmp_path: Path) -> None:
    # Short leases, so the restarted server notices the abandoned run quickly.
    server.extra_env = {
        "AME_LAUNCHER_LEASE_TTL": "1s",
        "AME_LAUNCHER_HEARTBEAT_INTERVAL": "0.3s",
        "AME_LAUNCHER_RECONCILE_INTERVAL": "0.3s",
    }
    server.start()
    assert server.proc is not None
    marker = tmp_path / "pgid"
    submitted = server.ame("runs", "submit", "--no-follow", "--", f"echo $$ > {marker}; sleep 300")
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip()
    _deadline_wait(lambda: marker.exists() and marker.read_text().strip(), 30, "the run to start")
    pgid = int(marker.read_text())
    assert live_group_members(pgid)

    server.proc.kill()  # no drain, no cleanup: the run's processes are orphaned
    server.proc.wait()
    server.start()
    _deadline_wait(lambda: '"lost"' in server.ame("runs", "get", "--json", run_id).stdout, 60, "the run to be lost")
    record = json.loads(server.ame("runs", "get", "--json", run_id).stdout)
    assert "its processes were ended" in record["reason"]
    _deadline_wait(lambda: not live_group_members(pgid), 10, "the orphaned processes to be gone")
    assert server.stop() == 0


def test_first_start_writes_a_private_server_admin_token_the_cli_sends_unasked(server: Server) -> None:
    import stat
    import urllib.error
    import urllib.request

    info = server.start()
    token_file = server.data_dir / "admin-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert token.startswith("ame_")

    me = server.ame("whoami")  # no AME_TOKEN anywhere: the CLI finds the local server's token
    assert me.returncode == 0 and "scope: server-admin" in me.stdout, me.stderr
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{info['rest_url']}/v1/runs", timeout=10)
    assert refused.value.code == 401
    assert token not in server.log.read_text()

    assert server.stop() == 0
    server.start()  # a restart keeps the token it wrote, which still works
    assert token_file.read_text().strip() == token
    assert server.ame("whoami").returncode == 0
    assert server.stop() == 0
