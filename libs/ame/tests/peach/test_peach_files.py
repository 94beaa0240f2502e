"""PEACH files (seed 002): fields, file:line:col problems, `ame validate`, and the run a task becomes."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import nbformat
import pytest
from click.testing import CliRunner

from ame.cli import spec_commands
from ame.domain.loops import LoopExecution
from ame.peach.history import plot_durations, plot_points
from ame.peach.notebooks import NotebookError, task_script
from ame.peach.tasks import run_spec_for_peach_task
from ame.spec import SpecError
from ame.spec.peach import check_codops, is_peach_file, load_peach_texts

SEED_TF_YAML = """\
codops: default
tasks:
  tf_task:
    notebook: tensorflow_demo.ipynb
    method: train_model
    dependencies:
      - tensorflow==2.0.0-alpha0
"""


def notebook(*cells: str) -> str:
    nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    nb.cells = [nbformat.v4.new_markdown_cell("# demo")] + [  # type: ignore[no-untyped-call]
        nbformat.v4.new_code_cell(c)  # type: ignore[no-untyped-call]
        for c in cells
    ]
    return str(nbformat.writes(nb))  # type: ignore[no-untyped-call]


def test_the_seeds_file_loads_with_python_as_the_default_executor_and_an_hour_timeout() -> None:
    config = load_peach_texts({"peach.conf/tf.yaml": SEED_TF_YAML})
    (task,) = config.tasks
    assert (config.codops, task.name, task.executor, task.loop, task.loop_name) == (
        "default",
        "tf_task",
        "python",
        "",
        "default",
    )
    assert task.timeout_seconds == 3600.0 and task.dependencies == ("tensorflow==2.0.0-alpha0",)


def test_metadata_loop_global_dependencies_and_a_five_minute_timeout() -> None:
    text = (
        "codops: chrts\ndependencies: [requests]\ntasks:\n  fetch:\n    loop: metadata\n    executor: python\n"
        "    notebook: articles_fetch.ipynb\n    method: fetch_from_api\n    dependencies: [six]\n"
    )
    (task,) = load_peach_texts({"peach.yaml": text}).tasks
    assert (task.loop, task.timeout_seconds, task.dependencies) == ("metadata", 300.0, ("requests", "six"))


def test_a_metadata_task_may_not_hold_the_shared_loop_longer_than_five_minutes(
    cli: click.Group, tmp_path: Path
) -> None:
    text = (
        "codops: chrts\ntasks:\n  fetch:\n    loop: metadata\n    notebook: a.ipynb\n    method: go\n"
        "    timeout: {timeout}\n  own:\n    notebook: a.ipynb\n    method: go\n    timeout: 7d\n"
    )
    (fetch, own) = load_peach_texts({"peach.yaml": text.format(timeout="5m")}).tasks
    assert (fetch.timeout_seconds, own.timeout_seconds) == (300.0, 7 * 86400.0)
    with pytest.raises(SpecError) as caught:
        load_peach_texts({"peach.yaml": text.format(timeout="301s")})
    assert str(caught.value) == "peach.yaml:7:14: task 'fetch': timeout is at most 300s in the shared 'metadata' loop"

    (tmp_path / "peach.yaml").write_text(text.format(timeout="7d"))
    (tmp_path / "a.ipynb").write_text(notebook("def go():\n    pass"))
    refused = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert refused.exit_code == 1
    assert "peach.yaml:7:14: task 'fetch': timeout is at most 300s" in refused.stderr


def test_problems_are_file_line_col_across_files() -> None:
    bad = "codops: default\ntasks:\n  a:\n    notebook: x.ipynb\n    method: 1run\n    exector: python\n"
    other = "codops: sesr\ntasks:\n  tf_task:\n    notebook: y.ipynb\n    method: go\n"
    with pytest.raises(SpecError) as caught:
        load_peach_texts({"peach.conf/a.yaml": bad, "peach.conf/tf.yaml": SEED_TF_YAML, "peach.yaml": other})
    text = str(caught.value)
    assert "peach.conf/a.yaml:5:13: tasks.a.method: must be the name of a Python function" in text
    assert "peach.conf/a.yaml:6:5: tasks.a.exector: unknown field 'exector'" in text
    assert "peach.yaml:1:9: codops 'sesr' differs from 'default' of the other files" in text
    assert "peach.yaml:3:3: task 'tf_task' is also defined in peach.conf/tf.yaml" in text


def test_codops_must_be_the_organisation_of_the_source() -> None:
    config = load_peach_texts({"peach.conf/tf.yaml": SEED_TF_YAML})
    check_codops(config, "default")
    with pytest.raises(SpecError, match=r"peach.conf/tf.yaml:1:9: codops 'default' is not this project's"):
        check_codops(config, "chrts")


def test_which_paths_are_peach_files() -> None:
    assert [
        p
        for p in (
            "peach.yaml",
            "peach.conf/tf.yaml",
            "peach.conf/a.yml",
            "sub/peach.yaml",
            "peach.conf/x/y.yaml",
            "peach.conf/readme.md",
        )
        if is_peach_file(p)
    ] == [
        "peach.yaml",
        "peach.conf/tf.yaml",
        "peach.conf/a.yml",
    ]


def _run(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_only_the_entry_functions_cell_runs_with_shell_escapes_translated(tmp_path: Path) -> None:
    text = notebook(
        "raise RuntimeError('cell 2 must not run')",
        "%matplotlib inline\nfrom pathlib import Path\ndef train_model():\n    !echo from-the-shell\n"
        "    Path('weights.txt').write_text('trained')",
    )
    done = _run(task_script(text, "tensorflow_demo.ipynb", "train_model"), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "from-the-shell\n"
    assert (tmp_path / "weights.txt").read_text() == "trained"


def test_full_notebook_runs_every_cell_first_and_errors_name_the_cell(tmp_path: Path) -> None:
    text = notebook("WEIGHT = 3", "def train_model():\n    print(WEIGHT * 2)\n    1 / 0")
    done = _run(task_script(text, "demo.ipynb", "train_model", full_notebook=True), tmp_path)
    assert done.stdout == "6\n"
    assert done.returncode == 1 and 'File "demo.ipynb [cell 3]", line 3' in done.stderr


def test_magics_that_need_a_kernel_are_refused_naming_the_cell() -> None:
    text = notebook("x = 1", "%pip install six\ndef train_model():\n    pass")
    with pytest.raises(NotebookError, match=r"demo.ipynb, cell 3: the IPython magic %pip needs a notebook kernel"):
        task_script(text, "demo.ipynb", "train_model")
    with pytest.raises(NotebookError, match=r"cell 2: the IPython magic %%time"):
        task_script(notebook("%%time\nx = 1", "def go():\n  pass"), "demo.ipynb", "go", full_notebook=True)
    with pytest.raises(NotebookError, match=r"no cell defines the entry function train_model\(\)"):
        task_script(notebook("def other():\n  pass"), "demo.ipynb", "train_model")


def test_the_run_a_task_becomes() -> None:
    (task,) = load_peach_texts({"peach.conf/tf.yaml": SEED_TF_YAML}).tasks
    spec = run_spec_for_peach_task(task, "print(1)", project="repo", project_version_id="v" * 64)
    assert (spec.executor.kind, spec.timeout_seconds, spec.loop, spec.task) == ("pip", 3600.0, "", "tf_task")
    assert {e.key: e.value for e in spec.environment}["AME_PIP_REQUIREMENTS"] == "tensorflow==2.0.0-alpha0"
    assert spec.command == "python -c 'print(1)'"


@pytest.fixture
def cli() -> click.Group:
    @click.group()
    def root() -> None:
        pass

    @root.group()
    def task() -> None:
        pass

    spec_commands.register(root)
    return root


def test_ame_validate_knows_peach_files(cli: click.Group, tmp_path: Path) -> None:
    (tmp_path / "peach.conf").mkdir()
    (tmp_path / "peach.conf" / "tf.yaml").write_text(SEED_TF_YAML)
    (tmp_path / "tensorflow_demo.ipynb").write_text(notebook("def train_model():\n    pass"))
    ok = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    assert "PEACH files of organisation default: valid (1 task; loops: default)" in ok.output

    (tmp_path / "peach.conf" / "tf.yaml").write_text(SEED_TF_YAML.replace("method: train_model", "method: [x]"))
    bad = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert bad.exit_code == 1
    assert "peach.conf/tf.yaml:5:13: tasks.tf_task.method:" in bad.stderr

    (tmp_path / "peach.conf" / "tf.yaml").write_text(SEED_TF_YAML)
    (tmp_path / "tensorflow_demo.ipynb").write_text(notebook("!ls\n%time x = 1\ndef train_model():\n    pass"))
    magic = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert magic.exit_code == 1 and "tensorflow_demo.ipynb, cell 2: the IPython magic %time" in magic.stderr


def test_the_graph_marks_successes_and_failures_at_their_durations() -> None:
    start = datetime(2026, 12, 2, tzinfo=UTC)

    def execution(i: int, status: str, seconds: float | None) -> LoopExecution:
        return LoopExecution(
            id=i,
            project="p",
            task="t",
            loop="default",
            cycle=i,
            run_id=None,
            version="abc",
            version_id="abc",
            status=status,
            reason="",
            started_at=start + timedelta(minutes=i),
            finished_at=start + timedelta(minutes=i, seconds=seconds or 0),
            duration_seconds=seconds,
        )

    executions = [execution(1, "succeeded", 2.0), execution(2, "timed_out", 5.0), execution(3, "running", None)]
    assert [(p.duration_seconds, p.succeeded) for p in plot_points(executions)] == [(2.0, True), (5.0, False)]
    figure = plot_durations(executions)
    successes, failures = figure.axes[0].collections
    assert [list(xy)[1] for xy in successes.get_offsets()] == [2.0]
    assert [list(xy)[1] for xy in failures.get_offsets()] == [5.0]
