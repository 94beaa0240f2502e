"""`project_in_tree` (does a synced tree hold a project, and which files) and the scrubbing of git messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from ame_api.sources.git import check_url, scrub
from ame_api.sources.tree import SourceTree, TreeProblem, project_in_tree

GOOD = """\
tasks:
  - name: hello
    executor: !custom
      command: echo hello
"""


def _tree(root: Path, path: str = "", url: str = "https://example.org/team/models.git") -> SourceTree:
    return SourceTree(
        organisation="default", root=root / path if path else root, path=path, url=url, branch="main", commit="c" * 40
    )


def test_no_project_file_is_no_project(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("nothing here\n")
    assert project_in_tree(_tree(tmp_path)) is None
    assert project_in_tree(_tree(tmp_path, "missing/dir")) is None


def test_the_project_is_named_by_the_file_else_the_directory_else_the_repository(tmp_path: Path) -> None:
    (tmp_path / "ame.yml").write_text(GOOD)
    found = project_in_tree(_tree(tmp_path))
    assert found is not None and (found.kind, found.name, found.files) == ("ame", "models", ("ame.yml",))
    sub = tmp_path / "ml" / "churn"
    sub.mkdir(parents=True)
    (sub / "ame.yaml").write_text(GOOD)
    found = project_in_tree(_tree(tmp_path, "ml/churn"))
    assert found is not None and (found.name, found.files) == ("churn", ("ame.yaml",))
    (sub / "ame.yaml").write_text("project: named\n" + GOOD)
    found = project_in_tree(_tree(tmp_path, "ml/churn"))
    assert found is not None and found.name == "named"


def test_a_broken_file_is_a_problem_with_its_place_in_the_repository(tmp_path: Path) -> None:
    sub = tmp_path / "ml"
    sub.mkdir()
    (sub / "ame.yml").write_text("tasks:\n  - name: hello\n    executr: {}\n")
    with pytest.raises(TreeProblem) as raised:
        project_in_tree(_tree(tmp_path, "ml"))
    assert raised.value.problems and all(p.startswith("ml/ame.yml:") for p in raised.value.problems)
    assert str(tmp_path) not in str(raised.value)


def test_a_linked_project_file_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.yml"
    outside.write_text(GOOD)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "ame.yml").symlink_to(outside)
    with pytest.raises(TreeProblem, match="not a symbolic link"):
        project_in_tree(_tree(repo))


def test_scrub_hides_secrets_and_url_credentials() -> None:
    key = "-----BEGIN KEY-----\nabcdefghijkl\nmnopqrstuvwx\n-----END KEY-----\n"
    text = "fatal: https://bob:tok-123456@host/r.git refused tok-123456; key line mnopqrstuvwx"
    cleaned = scrub(text, ["tok-123456", key])
    assert "tok-123456" not in cleaned and "bob" not in cleaned and "mnopqrstuvwx" not in cleaned, cleaned


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://u:p@host/r.git", "holds a password"),
        ("/srv/repo.git", "not allowed on this server"),
        ("file:///srv/repo.git", "not allowed on this server"),
        ("ext::sh -c touch% /tmp/x", "without spaces"),
        ("-oProxyCommand=x", "cannot start with '-'"),
    ],
)
def test_urls_a_source_may_not_use(url: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        check_url(url, allow_local=False)
    assert check_url("git@github.com:team/r.git", allow_local=False)
    assert check_url("/srv/repo.git", allow_local=True)
