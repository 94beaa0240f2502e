"""Templates from other projects as the server pinned them: the CLI resolves a pushed version's tasks the way the
server did at commit, from the same versions of those projects (read through the ordinary project API)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ame.sdk import Client
    from ame.spec import ExternalTemplates, Project, Template


def describe_pins(pins: Mapping[str, str]) -> str:
    """`ame: templates from shared@1a2b3c4d5e6f, other@…` (empty when the version takes none)."""
    if not pins:
        return ""
    listed = ", ".join(f"{project}@{version[:12]}" for project, version in sorted(pins.items()))
    return f"ame: templates from {listed}"


def pinned_templates(client: Client, pins: Mapping[str, str]) -> ExternalTemplates:
    """A lookup over the pinned versions of other projects, each project's ame.yml read once, on first use."""
    from ame.spec import SpecError, load_project_text
    from ame.spec.loader import PROJECT_FILE_NAMES

    loaded: dict[str, Project] = {}

    def find(project: str, name: str) -> Template:
        if project not in loaded:
            version = pins.get(project)
            if version is None:
                raise LookupError(f"the server pinned no version of project '{project}'; push this project again")
            _, files = client.get_version(project, version)
            entry = next((f for f in files if f.path in PROJECT_FILE_NAMES), None)
            if entry is None:
                raise LookupError(f"project '{project}' (version {version[:12]}) has no ame.yml")
            text = b"".join(client.download_blob(project, entry.sha256)).decode("utf-8-sig")
            try:
                loaded[project] = load_project_text(text, f"{project}/{entry.path}")
            except SpecError as error:
                raise LookupError(f"project '{project}' (version {version[:12]}): {error.problems[0]}") from None
        template = loaded[project].templates.get(name)
        if template is None:
            raise LookupError(f"project '{project}' (version {pins[project][:12]}) has no template '{name}'")
        return template

    return find
