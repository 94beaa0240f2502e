"""The CLI: `ame task run -l`, the picker's non-terminal error, remote hand-off, secret/cache/artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ame.cli.main import cli
from ame.runner.home import AmeHome

from .support import ProjectFactory

PROJECT = """
tasks:
  - name: hello
    executor: !custom
      command: 'echo "out $TOKEN"; echo err >&2; echo artifact > result.txt; exit 3'
    secrets:
      - !ame {key: tok, injectAs: TOKEN}
    artifacts: {saveChangedFiles: true}
  - name: other
    executor: !custom
      command: 'true'
"""


def _invoke(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_local_run_streams_masks_and_exits_with_the_tasks_code(
    ame_home: AmeHome, make_project: ProjectFactory, tmp_path: Path
) -> None:
    project = make_project(PROJECT)
    assert _invoke("secret", "add", "-l", "tok", "--value-stdin", input="sekrit\n")[0] == 0
    code, out, err = _invoke("task", "run", "-l", "hello", "-p", str(project))
    assert code == 3
    assert out == "out ***\n"
    assert "err\n" in err
    assert "sekrit" not in out + err

    run_id = next(ame_home.runs.glob("*.json")).stem
    code, out, _ = _invoke("artifacts", "list", "-l", run_id[:20])
    assert code == 0
    assert "result.txt" in out
    code, _, _ = _invoke("artifacts", "get", "-l", run_id, "result.txt", "--dest", str(tmp_path / "dl"))
    assert code == 0
    assert (tmp_path / "dl" / "result.txt").read_text() == "artifact\n"


def test_without_a_name_and_no_terminal_lists_the_tasks(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    project = make_project(PROJECT)
    code, _, err = _invoke("task", "run", "-l", "-p", str(project))
    assert code == 2
    assert "hello" in err
    assert "other" in err


def test_missing_secret_is_a_clear_error(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    project = make_project(PROJECT)
    code, out, err = _invoke("task", "run", "-l", "hello", "-p", str(project))
    assert code == 1
    assert "TOKEN: secret 'tok' not found" in err
    assert out == ""


def test_without_local_flag_hands_over_to_the_remote_runner(
    ame_home: AmeHome, make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ame.cli.remote_commands as remote

    calls: list[tuple[Path, str, bool]] = []

    def fake_run_remote(
        project_dir: Path, task_name: str, follow: bool, download: bool = True, args: object = None
    ) -> int:
        calls.append((project_dir, task_name, follow))
        return 5

    monkeypatch.setattr(remote, "run_remote", fake_run_remote)
    project = make_project(PROJECT)
    code, _, _ = _invoke("task", "run", "other", "-p", str(project), "--no-follow")
    assert code == 5
    assert calls == [(project, "other", False)]


def test_the_picker_chooses_the_task_of_a_remote_run_too(
    ame_home: AmeHome, make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ame.cli.local_commands as local
    import ame.cli.remote_commands as remote

    calls: list[tuple[Path, str, bool]] = []

    def fake_run_remote(
        project_dir: Path, task_name: str, follow: bool, download: bool = True, args: object = None
    ) -> int:
        calls.append((project_dir, task_name, follow))
        return 0

    monkeypatch.setattr(remote, "run_remote", fake_run_remote)
    monkeypatch.setattr(local, "_stdin_is_terminal", lambda: True)
    project = make_project(PROJECT)
    code, _, err = _invoke("task", "run", "-p", str(project), input="2\n")
    assert code == 0
    assert "1. hello" in err
    assert "2. other" in err
    assert calls == [(project, "other", True)]


def test_secret_commands_never_print_values(ame_home: AmeHome) -> None:
    assert _invoke("secret", "add", "-l", "a", "--value-stdin", input="value-a\n")[0] == 0
    code, out, _ = _invoke("secret", "list", "-l")
    assert (code, out) == (0, "a\n")
    assert _invoke("secret", "remove", "-l", "a")[0] == 0
    assert _invoke("secret", "remove", "-l", "a")[0] == 1


def test_cache_list_and_prune_on_an_empty_home(ame_home: AmeHome) -> None:
    code, out, _ = _invoke("cache", "list")
    assert code == 0
    assert "no cached environments" in out
    code, out, _ = _invoke("cache", "prune", "--all")
    assert (code, out) == (0, "0 removed, 0 B freed\n")
