"""`project_in_tree` knows PEACH files (seed 002): a tree of PEACH files alone is a project, checked as
`ame validate` checks it, and its `codops` must be the source's organisation."""

from __future__ import annotations

from pathlib import Path

import pytest

from ame_api.sources.tree import SourceTree, TreeProblem, project_in_tree

TF_YAML = "codops: default\ntasks:\n  tf_task:\n    notebook: tensorflow_demo.ipynb\n    method: train_model\n"


def _tree(root: Path, organisation: str = "default", path: str = "") -> SourceTree:
    return SourceTree(
        organisation=organisation,
        root=root,
        path=path,
        url="https://git.example.org/lab-tutorials.git",
        branch="master",
        commit="0" * 40,
    )


def test_peach_files_alone_are_a_project_named_after_the_repository(tmp_path: Path) -> None:
    (tmp_path / "peach.conf").mkdir()
    (tmp_path / "peach.conf" / "tf.yaml").write_text(TF_YAML)
    (tmp_path / "peach.yaml").write_text(TF_YAML.replace("tf_task", "other"))
    found = project_in_tree(_tree(tmp_path))
    assert found is not None
    assert (found.kind, found.name, found.files) == ("peach", "lab-tutorials", ("peach.yaml", "peach.conf/tf.yaml"))


def test_beside_an_ame_yml_the_peach_files_are_listed_too(tmp_path: Path) -> None:
    (tmp_path / "ame.yml").write_text(
        "project: both\ntasks:\n  - name: a\n    executor: !custom\n      command: 'true'\n"
    )
    (tmp_path / "peach.yaml").write_text(TF_YAML)
    found = project_in_tree(_tree(tmp_path))
    assert found is not None and (found.kind, found.name, found.files) == ("ame", "both", ("ame.yml", "peach.yaml"))


def test_codops_of_another_organisation_and_bad_fields_are_file_line_col(tmp_path: Path) -> None:
    (tmp_path / "sub" / "peach.conf").mkdir(parents=True)
    (tmp_path / "sub" / "peach.conf" / "tf.yaml").write_text(TF_YAML)
    with pytest.raises(TreeProblem) as caught:
        project_in_tree(_tree(tmp_path / "sub", organisation="chrts", path="sub"))
    assert caught.value.problems == [
        "sub/peach.conf/tf.yaml:1:9: codops 'default' is not this project's organisation 'chrts'"
    ]
    (tmp_path / "sub" / "peach.conf" / "tf.yaml").write_text(TF_YAML + "    executor: yarn\n")
    with pytest.raises(TreeProblem, match=r"sub/peach.conf/tf.yaml:6:15: tasks.tf_task.executor"):
        project_in_tree(_tree(tmp_path / "sub", path="sub"))


def test_a_linked_peach_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.yaml").write_text(TF_YAML)
    (tmp_path / "peach.yaml").symlink_to(tmp_path / "elsewhere.yaml")
    with pytest.raises(TreeProblem, match=r"peach\.yaml: PEACH files must be the tree.s own files"):
        project_in_tree(_tree(tmp_path))


def test_no_project_file_is_no_project(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("nothing here\n")
    assert project_in_tree(_tree(tmp_path)) is None
