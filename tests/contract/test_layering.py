"""The layering contracts (.importlinter) hold: services independent, domain pure, contracts at the edges."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _has_import_linter_config() -> bool:
    if (ROOT / ".importlinter").is_file():
        return True
    setup_cfg = ROOT / "setup.cfg"
    if setup_cfg.is_file():
        parser = configparser.ConfigParser()
        parser.read(setup_cfg)
        if parser.has_section("importlinter"):
            return True
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return "importlinter" in pyproject.get("tool", {})


def _lint_imports() -> str:
    beside_python = Path(sys.executable).parent / "lint-imports"
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports is not installed; it is in the dev dependency group (`uv sync`)")
    return found


def test_import_contracts_hold() -> None:
    if not _has_import_linter_config():
        pytest.skip("no import-linter configuration (.importlinter) in the repository yet")
    result = subprocess.run(
        [_lint_imports(), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
