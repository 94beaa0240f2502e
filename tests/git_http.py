"""Real git repositories for the git source tests: bare repositories on disk, commits made with the git CLI, and
Debian's `git http-backend` (a CGI program) served over HTTP by a small threaded server, with basic auth."""

from __future__ import annotations

import base64
import hmac
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Tester",
    "GIT_AUTHOR_EMAIL": "tester@example.org",
    "GIT_COMMITTER_NAME": "Tester",
    "GIT_COMMITTER_EMAIL": "tester@example.org",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, **_GIT_ENV}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


@dataclass
class Repo:
    """A bare repository (`origin`) and a working clone that commits and pushes to it."""

    origin: Path
    work: Path

    @classmethod
    def create(cls, root: Path, name: str = "origin.git", branch: str = "main") -> Repo:
        origin = root / name
        git("init", "--bare", "-q", "-b", branch, str(origin))
        work = root / f"{name}-work"
        git("init", "-q", "-b", branch, str(work))
        git("remote", "add", "origin", str(origin), cwd=work)
        return cls(origin, work)

    def commit(self, files: dict[str, str], message: str = "change", branch: str = "main") -> str:
        """Write the files (relative path -> text), commit them, push; the commit id."""
        for path, text in files.items():
            target = self.work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", message, cwd=self.work)
        git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)


class _Backend(BaseHTTPRequestHandler):
    server: _GitHttpServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        user = self._authenticated()
        if user is None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {
            "PATH": os.environ.get("PATH", ""),
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": user,
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
        }
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        done = subprocess.run([HTTP_BACKEND], input=body, env=env, capture_output=True, check=False)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _authenticated(self) -> str | None:
        if self.server.password is None:
            return "anonymous"
        given = self.headers.get("Authorization", "")
        if not given.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(given[6:]).decode().partition(":")
        self.server.seen_users.append(user)
        return user if hmac.compare_digest(password, self.server.password) else None


class _GitHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, password: str | None) -> None:
        super().__init__(("127.0.0.1", 0), _Backend)
        self.root = root
        self.password = password
        self.seen_users: list[str] = []


@contextmanager
def git_http_server(root: Path, *, password: str | None = None) -> Iterator[_GitHttpServer]:
    """`git http-backend` serving the bare repositories under `root` at http://127.0.0.1:<port>/<name>; with
    `password`, every request needs basic auth with it (any user name)."""
    server = _GitHttpServer(root, password)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
