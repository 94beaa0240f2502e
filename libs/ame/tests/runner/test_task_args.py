"""Task arguments on a local run (`ame task run -l NAME --args/--args-file`): the file always, the variable when
small, AME_IN_TASK=1 in every run, and `ame.task_args()` reading them back."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import ame
from ame.cli.main import cli
from ame.domain.limits import MAX_TASK_ARGS_ENV_BYTES
from ame.runner.home import AmeHome

from .support import ProjectFactory

SHOW = """\
import os, ame
print("in_task", os.environ["AME_IN_TASK"], ame.in_task())
print("env", os.environ.get("AME_TASK_ARGS", "<unset>")[:40])
print("file", open(os.environ["AME_TASK_ARGS_FILE"]).read()[:40])
args = ame.task_args()
print("sdk", type(args).__name__, len(json.dumps(args)) if args is not None else 0)
print("path", os.environ["AME_TASK_ARGS_FILE"])
"""


def _project(make_project: ProjectFactory) -> Path:
    command = f"{shlex.quote(sys.executable)} show.py"
    return make_project(
        f"tasks:\n  - name: show\n    executor: !custom\n      command: {command}\n",
        {"show.py": "import json\n" + SHOW},
    )


def _run(project: Path, *extra: str) -> tuple[int, dict[str, str]]:
    result = CliRunner().invoke(cli, ["task", "run", "-l", "show", "-p", str(project), *extra], catch_exceptions=False)
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    return result.exit_code, lines


def test_small_arguments_are_in_the_environment_and_the_file(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    code, out = _run(_project(make_project), "--args", '{"ref": "main", "n": [1, 2]}')
    assert code == 0, out
    assert out["in_task"] == "1 True"
    assert out["env"] == '{"ref":"main","n":[1,2]}'
    assert out["file"] == '{"ref":"main","n":[1,2]}'
    assert out["sdk"] == "dict 28"  # json.dumps of the dict read back
    # The file lives under AME's home, outside the project (never an artifact), and goes with the run.
    assert Path(out["path"]).parent == ame_home.task_args
    assert not Path(out["path"]).exists()


def test_big_arguments_are_in_the_file_only(ame_home: AmeHome, make_project: ProjectFactory, tmp_path: Path) -> None:
    big = {"pad": "x" * MAX_TASK_ARGS_ENV_BYTES}
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps(big))
    code, out = _run(_project(make_project), "--args-file", str(args_file))
    assert code == 0, out
    assert out["env"] == "<unset>"
    assert out["file"].startswith('{"pad":"xxx')
    assert out["sdk"] == f"dict {len(json.dumps(big))}"


def test_a_run_without_arguments_still_has_the_file_and_the_marker(
    ame_home: AmeHome, make_project: ProjectFactory
) -> None:
    code, out = _run(_project(make_project))
    assert code == 0, out
    assert (out["in_task"], out["env"], out["file"], out["sdk"]) == ("1 True", "null", "null", "NoneType 0")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--args", "{not json"), "not JSON"),
        (("--args", "{}", "--args-file", __file__), "not both"),
    ],
)
def test_bad_arguments_are_a_usage_error(
    ame_home: AmeHome, make_project: ProjectFactory, extra: tuple[str, ...], message: str
) -> None:
    result = CliRunner().invoke(cli, ["task", "run", "-l", "show", "-p", str(_project(make_project)), *extra])
    assert result.exit_code == 2
    assert message in result.stderr


def test_task_args_outside_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AME_TASK_ARGS_FILE", raising=False)
    monkeypatch.delenv("AME_TASK_ARGS", raising=False)
    monkeypatch.delenv("AME_IN_TASK", raising=False)
    assert ame.task_args() is None
    assert not ame.in_task()
    assert ame.task_args({"AME_TASK_ARGS": "[1, 2]"}) == [1, 2]
