"""Git as project sources use it: the remote's default branch, incremental fetches into a per-source cache, and
the tree of one commit.

Every command runs with a timeout, in its own process group (killed whole on timeout), with a clean environment
(no user or system configuration, no terminal prompt, only the transports a source may use) and the source's
credential in a 0600 file in a private directory: a token reaches git through an askpass script that reads that
file, an SSH key through `GIT_SSH_COMMAND -i`. The value is never in an argument, an environment variable or a
URL, and every message that leaves this module is scrubbed of it (and of any `user:password@` in a URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ame_api.sources.settings import SourceSettings

__all__ = ["Credential", "Git", "GitError", "TreeTooLarge", "check_branch", "check_url", "is_ssh_url", "scrub"]

_SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:(?!//)")
_BRANCH = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)(?!.*@\{)[A-Za-z0-9._/+-]{1,200}(?<![./])$")
_USERINFO = re.compile(r"(://)[^/@\s]*@")
_SYMREF = re.compile(r"^ref: refs/heads/(\S+)\tHEAD$", re.MULTILINE)
_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
# Inherited so that git reaches remotes the way the host does (proxies, private CAs), and nothing else.
_INHERITED = ("PATH", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
_INHERITED_PREFIXES = ("GIT_SSL_", "SSL_CERT_")
_ASKPASS = """#!/bin/sh
case "$1" in
  Username*) printf '%s\\n' "$AME_GIT_USERNAME" ;;
  *) cat "$AME_GIT_PASSWORD_FILE" ;;
esac
"""


class GitError(Exception):
    """A git operation failed; the message is scrubbed of the credential and fit for a status or a log."""


class TreeTooLarge(GitError):
    """A commit's files are over a limit; refused before any was written (a judgement about the commit)."""


@dataclass(frozen=True)
class Credential:
    """A value from the organisation's secret store: a token (HTTP basic auth password) or an SSH private key."""

    kind: Literal["token", "ssh-key"]
    value: str

    def __repr__(self) -> str:  # never the value, wherever a credential is printed
        return f"Credential(kind={self.kind!r})"


def is_ssh_url(url: str) -> bool:
    return url.startswith("ssh://") or bool(_SCP_LIKE.match(url))


def is_local_url(url: str) -> bool:
    return url.startswith("file://") or url.startswith("/")


def check_url(url: str, *, allow_local: bool) -> str:
    """The URL if a source may use it, else ValueError saying why (the message never repeats a password)."""
    if not url or len(url) > 2000 or any(c in url for c in "\x00\n\r\t "):
        raise ValueError("the repository URL must be 1-2000 characters without spaces or control characters")
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the repository URL is not valid UTF-8 text") from None
    if url.startswith("-"):
        raise ValueError("the repository URL cannot start with '-'")
    if url.startswith(("http://", "https://")):
        if re.match(r"^https?://[^/@]*:[^/@]*@", url):
            raise ValueError(
                "the repository URL holds a password; put the token in the secret store and name it with --secret"
            )
        return url
    if is_ssh_url(url):
        return url
    if is_local_url(url):
        if not allow_local:
            raise ValueError(
                "repositories on the server's own filesystem are not allowed on this server "
                "(AME_PROJECTSRC_ALLOW_LOCAL); use an https:// or ssh:// URL"
            )
        return url
    raise ValueError("the repository URL must be https://, http://, ssh://, user@host:path (or a local path)")


def check_branch(branch: str) -> str:
    if not _BRANCH.match(branch) or branch.endswith(".lock"):
        raise ValueError(f"{branch[:200]!r} is not a branch name git accepts")
    return branch


def scrub(text: str, secrets: Sequence[str] = ()) -> str:
    """`text` without any of `secrets` (nor a line of one) and without the user information of URLs."""
    for secret in secrets:
        for part in {secret, *(line.strip() for line in secret.splitlines())}:
            if len(part) >= 4:
                text = text.replace(part, "***")
    return _USERINFO.sub(r"\1***@", text)


class Git:
    def __init__(self, settings: SourceSettings) -> None:
        self._settings = settings

    @contextlib.contextmanager
    def _environment(self, url: str, credential: Credential | None) -> Iterator[dict[str, str]]:
        """The environment git runs in, with the credential in a private directory removed afterwards."""
        private = Path(tempfile.mkdtemp(prefix="ame-git-"))  # 0700
        try:
            env = {k: v for k, v in os.environ.items() if k in _INHERITED or k.startswith(_INHERITED_PREFIXES)}
            protocols = ["http", "https", "ssh"] + (["file"] if self._settings.allow_local else [])
            env.update(
                HOME=str(private),
                LANG="C",
                LC_ALL="C",
                GIT_CONFIG_NOSYSTEM="1",
                GIT_CONFIG_GLOBAL=os.devnull,
                GIT_TERMINAL_PROMPT="0",
                GIT_ALLOW_PROTOCOL=":".join(protocols),
                GIT_SSH_COMMAND="ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new "
                f"-o UserKnownHostsFile={shlex.quote(str(self._settings.known_hosts_file()))}",
            )
            if credential is not None:
                secret_file = private / "credential"
                fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as out:
                    out.write(credential.value if credential.value.endswith("\n") else credential.value + "\n")
                if credential.kind == "ssh-key":
                    env["GIT_SSH_COMMAND"] += f" -o IdentitiesOnly=yes -i {shlex.quote(str(secret_file))}"
                else:
                    askpass = private / "askpass"
                    fd = os.open(askpass, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
                    with os.fdopen(fd, "w") as out:
                        out.write(_ASKPASS)
                    env.update(
                        GIT_ASKPASS=str(askpass),
                        AME_GIT_PASSWORD_FILE=str(secret_file),
                        AME_GIT_USERNAME=self._settings.token_username,
                    )
            yield env
        finally:
            shutil.rmtree(private, ignore_errors=True)

    async def _run(
        self,
        args: Sequence[str],
        *,
        env: dict[str, str],
        secrets: Sequence[str],
        what: str,
        watch: Path | None = None,
    ) -> str:
        """Run git; its stdout, or GitError with its scrubbed stderr. `watch`: a directory held under the size
        limit while git writes into it."""
        process = await asyncio.create_subprocess_exec(
            "git",
            "-c",
            "credential.helper=",
            "-c",
            "core.hooksPath=/dev/null",
            *args,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        communicate = asyncio.ensure_future(process.communicate())
        over = False
        try:
            deadline = asyncio.get_running_loop().time() + self._settings.git_timeout
            while not communicate.done():
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise TimeoutError
                await asyncio.wait([communicate], timeout=min(left, 0.5))
                if (
                    watch is not None
                    and not communicate.done()
                    and await asyncio.to_thread(_size, watch) > self._settings.max_repo_bytes
                ):
                    over = True
                    break
        except asyncio.CancelledError:
            _kill(process)
            communicate.cancel()
            raise
        except TimeoutError:
            _kill(process)
            communicate.cancel()
            raise GitError(
                f"{what} took longer than {self._settings.git_timeout:g}s (AME_PROJECTSRC_GIT_TIMEOUT)"
            ) from None
        if over:
            _kill(process)
            await asyncio.gather(communicate, return_exceptions=True)
            raise GitError(
                f"{what}: the repository is over {self._settings.max_repo_bytes} bytes (AME_PROJECTSRC_MAX_REPO_BYTES)"
            )
        out, err = communicate.result()
        if process.returncode != 0:
            message = scrub(err.decode("utf-8", "replace").strip(), secrets)[-1000:]
            raise GitError(f"{what} failed: {message or f'git exited with {process.returncode}'}")
        return out.decode("utf-8", "replace")

    async def default_branch(self, url: str, credential: Credential | None) -> str:
        """The branch the remote's HEAD points at (`git ls-remote --symref URL HEAD`)."""
        secrets = [credential.value] if credential else []
        with self._environment(url, credential) as env:
            out = await self._run(
                ["ls-remote", "--symref", "--", url, "HEAD"], env=env, secrets=secrets, what="reading the remote"
            )
        found = _SYMREF.search(out)
        if found is None:
            raise GitError("the remote names no default branch (an empty repository?); give one with --branch")
        return check_branch(found.group(1))

    async def fetch(self, repo: Path, url: str, branch: str, credential: Credential | None) -> str:
        """Fetch the branch's head into the bare cache repository `repo` (created if absent); its commit id.

        Incremental: objects the cache holds are not fetched again. Shallow (the head commit alone): history is
        not needed to make a version, and it bounds what a large repository costs.
        """
        secrets = [credential.value] if credential else []
        with self._environment(url, credential) as env:
            if not await asyncio.to_thread(os.path.exists, repo / "HEAD"):
                await asyncio.to_thread(repo.mkdir, parents=True, exist_ok=True)
                await self._run(["init", "--bare", "-q", str(repo)], env=env, secrets=secrets, what="git init")
            await self._run(
                [
                    "-C",
                    str(repo),
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--depth=1",
                    "--",
                    url,
                    f"+refs/heads/{branch}:refs/ame/head",
                ],
                env=env,
                secrets=secrets,
                what=f"fetching branch {branch!r}",
                watch=repo,
            )
            out = await self._run(
                ["-C", str(repo), "rev-parse", "--verify", "refs/ame/head^{commit}"],
                env=env,
                secrets=secrets,
                what="reading the fetched head",
            )
        commit = out.strip()
        if not _COMMIT.match(commit):
            raise GitError(f"the fetched head is not a commit id: {commit[:80]!r}")
        return commit

    async def checkout(
        self,
        repo: Path,
        tree: Path,
        commit: str,
        *,
        path: str = "",
        max_bytes: int | None = None,
        max_files: int | None = None,
    ) -> None:
        """Make `tree` hold exactly `commit`'s files (files of the previous checkout that left are removed).

        The sizes the commit's tree records are read first (`git ls-tree -r -l`): a small pack of very compressible
        blobs would otherwise fill the disk. TreeTooLarge, before anything is written, when the whole tree is over
        `max_repo_bytes` or the files under `path` (all of them without one) are over `max_bytes` / `max_files`.
        """
        await self._check_size(repo, commit, path=path, max_bytes=max_bytes, max_files=max_files)
        if not await asyncio.to_thread(os.path.exists, repo / "ame-index"):
            # No record of what the tree holds (first checkout, or a cache cut short): start from nothing.
            await asyncio.to_thread(shutil.rmtree, tree, ignore_errors=True)
        await asyncio.to_thread(tree.mkdir, parents=True, exist_ok=True)
        with self._environment("", None) as env:
            env["GIT_INDEX_FILE"] = str(repo / "ame-index")
            await self._run(
                ["--git-dir", str(repo), "--work-tree", str(tree), "read-tree", "-u", "--reset", commit],
                env=env,
                secrets=[],
                what=f"checking out {commit[:12]}",
            )

    async def _check_size(
        self, repo: Path, commit: str, *, path: str, max_bytes: int | None, max_files: int | None
    ) -> None:
        with self._environment("", None) as env:
            out = await self._run(
                ["--git-dir", str(repo), "ls-tree", "-r", "-l", "-z", "--full-tree", commit],
                env=env,
                secrets=[],
                what=f"reading the files of {commit[:12]}",
            )
        whole = part = files = 0
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        for entry in out.split("\0"):
            meta, _, name = entry.partition("\t")
            fields = meta.split()
            if len(fields) != 4 or fields[1] != "blob" or not fields[3].isdigit():
                continue  # the trailing empty entry, or a submodule (a commit, not checked out)
            size = int(fields[3])
            whole += size
            if name.startswith(prefix):
                part += size
                files += 1
        where = f"under {path.strip('/')}" if prefix else "in the commit"
        if whole > self._settings.max_repo_bytes:
            raise TreeTooLarge(
                f"its files are {whole} bytes, over the limit of {self._settings.max_repo_bytes} bytes a checkout may "
                "take (AME_PROJECTSRC_MAX_REPO_BYTES)"
            )
        if max_bytes is not None and part > max_bytes:
            raise TreeTooLarge(
                f"the files {where} are {part} bytes, over the project limit of {max_bytes} bytes "
                "(AME_API_PROJECT_MAX_BYTES)"
            )
        if max_files is not None and files > max_files:
            raise TreeTooLarge(
                f"{files} files {where}, over the project limit of {max_files} files (AME_API_PROJECT_MAX_FILES)"
            )


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _size(directory: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total
