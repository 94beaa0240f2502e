"""The generated contracts in libs/ame/src/ame/contracts are exactly what protoc makes of proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_contracts_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "tools/gen_proto.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        "generated contracts are stale; run `uv run python tools/gen_proto.py`\n" + result.stdout + result.stderr
    )
