"""How a source's credential reaches git: an SSH key as a 0600 file named by `ssh -i`, gone afterwards, and never
in an error. A stand-in `ssh` on PATH records what git hands it (no SSH server is needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ame_api.sources.git import Credential, Git, GitError
from ame_api.sources.settings import SourceSettings

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk-not-a-real-key\n-----END OPENSSH PRIVATE KEY-----\n"


async def test_an_ssh_key_is_a_0600_file_named_by_ssh_i_and_leaves_no_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "ssh-record"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_ssh = bin_dir / "ssh"
    fake_ssh.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {record}\n'
        'while [ $# -gt 0 ]; do if [ "$1" = -i ]; then '
        f'stat -c %a "$2" >> {record}; cat "$2" >> {record}; fi; shift; done\n'
        "echo 'Permission denied (publickey).' >&2\nexit 255\n"
    )
    fake_ssh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    git = Git(SourceSettings(cache_dir=tmp_path / "cache", git_timeout=30))

    with pytest.raises(GitError) as raised:
        await git.default_branch("git@git.example.org:team/repo.git", Credential("ssh-key", KEY))

    assert "Permission denied" in str(raised.value)
    assert "not-a-real-key" not in str(raised.value) and "BEGIN OPENSSH" not in str(raised.value)
    args, mode, *content = record.read_text().splitlines()
    assert "-o IdentitiesOnly=yes" in args and "-o BatchMode=yes" in args and "git@git.example.org" in args
    assert mode == "600" and "\n".join(content) + "\n" == KEY
    key_file = args.split(" -i ", 1)[1].split()[0]
    assert not Path(key_file).exists(), "the key file outlives the command"
    assert "not-a-real-key" not in repr(Credential("ssh-key", KEY))
