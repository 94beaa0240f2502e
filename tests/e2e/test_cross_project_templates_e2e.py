"""Templates from another project (seed 001 "Template imported from a separate project") on `ame server`, via the CLI.

The server resolves them at push time against the latest version of the named project, pins that version, and
`ame task view --server` shows it; locally `ame task run -l --with-project DIR` resolves them from a directory.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_ame_server import Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SHARED = """\
project: shared_templates
templates:
  - name: greeting_env
    environment:
      - key: GREETING
        val: {greeting}
    timeout: 5m
"""

MAIN = """\
project: main_project
tasks:
  - name: hello
    fromTemplate:
      name: greeting_env
      project: shared_templates
    executor:
      !custom
      command: {python} -c "import os; print(os.environ['GREETING'])"
  - name: hello_short
    fromTemplate: shared_templates.greeting_env
    executor:
      !custom
      command: {python} -c "import os; print('short', os.environ['GREETING'])"
  - name: both
    pipeline:
      - taskRef: hello
      - taskRef: hello_short
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "home")
    s.home.mkdir()
    yield s
    if s.proc is not None and s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()


def _project(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ame.yml").write_text(text)
    return root


def _push(server: Server, directory: Path) -> str:
    pushed = server.ame_in(directory, "project", "push")
    assert pushed.returncode == 0, pushed.stderr
    return pushed.stdout.strip()


def test_a_task_runs_with_a_template_of_another_pushed_project_pinned_at_push(server: Server, tmp_path: Path) -> None:
    server.start()
    shared = _project(tmp_path / "shared", SHARED.format(greeting="hello-v1"))
    main = _project(tmp_path / "main", MAIN.format(python=sys.executable))
    shared_v1 = _push(server, shared)

    remote = server.ame_in(main, "task", "run", "hello")
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == "hello-v1\n"
    assert f"templates from shared_templates@{shared_v1[:12]}" in remote.stderr
    short = server.ame_in(main, "task", "run", "hello_short")
    assert (short.returncode, short.stdout) == (0, "short hello-v1\n"), short.stderr
    # A pipeline of such tasks runs on the server too, each step with the pinned template.
    piped = server.ame_in(main, "task", "run", "both")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.splitlines() == ["[hello]       hello-v1", "[hello_short] short hello-v1"], piped.stdout

    view = server.ame_in(main, "task", "view", "hello", "--server")
    assert view.returncode == 0, view.stderr
    assert f"# templates from project shared_templates version {shared_v1}\n" in view.stdout
    assert "val: hello-v1" in view.stdout and "timeout: 5m" in view.stdout
    main_version = re.search(r"# project main_project version ([0-9a-f]{64})", view.stdout)
    assert main_version is not None, view.stdout

    # A newer template version is used by the next push of the project that takes it, not by versions pushed before.
    (shared / "ame.yml").write_text(SHARED.format(greeting="hello-v2"))
    shared_v2 = _push(server, shared)
    assert shared_v2 != shared_v1
    pinned = server.ame_in(main, "task", "view", "hello", "--server", "--version", main_version.group(1))
    assert f"shared_templates version {shared_v1}" in pinned.stdout, pinned.stdout
    (main / "notes.txt").write_text("a change\n")
    again = server.ame_in(main, "task", "run", "hello")
    assert (again.returncode, again.stdout) == (0, "hello-v2\n"), again.stderr
    assert f"templates from shared_templates@{shared_v2[:12]}" in again.stderr
    latest = server.ame_in(main, "task", "view", "hello", "--server")
    assert f"# templates from project shared_templates version {shared_v2}\n" in latest.stdout
    old = server.ame_in(main, "task", "view", "hello", "--server", "--version", main_version.group(1))
    assert f"shared_templates version {shared_v1}" in old.stdout, old.stdout

    # Locally the other project comes from a directory, as `ame validate --with-project` takes it.
    local = server.ame_in(main, "task", "run", "-l", "hello", "--with-project", str(shared))
    assert (local.returncode, local.stdout) == (0, "hello-v2\n"), local.stderr
    without = server.ame_in(main, "task", "run", "-l", "hello")
    assert without.returncode == 1
    assert "--with-project" in without.stderr


def test_unknown_projects_templates_and_cycles_fail_the_push_with_the_line(server: Server, tmp_path: Path) -> None:
    server.start()
    python = sys.executable
    _push(server, _project(tmp_path / "shared", SHARED.format(greeting="x")))

    ghost_text = MAIN.format(python=python).replace("project: shared_templates", "project: nope")
    ghost = _project(tmp_path / "ghost", ghost_text)
    pushed = server.ame_in(ghost, "project", "push")
    assert pushed.returncode != 0
    assert re.search(r"ame\.yml:\d+:\d+: .*template 'greeting_env' of project 'nope': no project 'nope'", pushed.stderr)

    typo = _project(tmp_path / "typo", MAIN.format(python=python).replace("name: greeting_env", "name: greetin"))
    pushed = server.ame_in(typo, "project", "push")
    assert pushed.returncode != 0
    assert re.search(
        r"ame\.yml:\d+:\d+: .*template 'greetin' of project 'shared_templates': .*has no template 'greetin' "
        r"\(its templates: greeting_env\)",
        pushed.stderr,
    ), pushed.stderr
    run = server.ame_in(typo, "task", "run", "hello")
    assert run.returncode != 0 and "has no template 'greetin'" in run.stderr

    # A cycle through two projects: a.base -> b.middle -> a.base, found when `a` is pushed again.
    a_v1 = "project: a\ntemplates:\n  - name: base\n    timeout: 1m\n"
    a = _project(tmp_path / "a", a_v1)
    _push(server, a)
    b = "project: b\ntemplates:\n  - name: middle\n    fromTemplate: a.base\n"
    _push(server, _project(tmp_path / "b", b))
    a_v2 = (
        "project: a\ntemplates:\n  - name: base\n    fromTemplate: b.middle\n"
        f"tasks:\n  - name: t\n    fromTemplate: base\n    executor:\n      !custom\n      command: {python} -V\n"
    )
    (a / "ame.yml").write_text(a_v2)
    pushed = server.ame_in(a, "project", "push")
    assert pushed.returncode != 0
    assert re.search(r"ame\.yml:\d+:\d+: .*template cycle: base -> b\.middle -> base", pushed.stderr), pushed.stderr
