"""Where the `ame` SDK lives, so that a task's own environment can import it (seed 004: "the SDK will already be
present"). An orchestration's bootstrap appends these directories after its environment's own site-packages (the
task's requirements win), and only when its Python is the runner's (the SDK's dependencies hold compiled modules).
"""

from __future__ import annotations

import functools
import os
import site
import sys
from pathlib import Path

__all__ = ["sdk_site_env"]


@functools.cache
def sdk_site_env() -> dict[str, str]:
    """AME_SDK_SITE (the runner's site directories, `ame`'s own first) and AME_SDK_PYTHON (its major.minor)."""
    import ame

    dirs = [str(Path(ame.__file__).resolve().parents[1]), *site.getsitepackages()]
    return {
        "AME_SDK_SITE": os.pathsep.join(dict.fromkeys(dirs)),
        "AME_SDK_PYTHON": f"{sys.version_info[0]}.{sys.version_info[1]}",
    }
