"""AME's main job on its embedded default, as a user would run it (`make run`).

Starts `ame server` (nats-server, PostgreSQL and the four services, data under .ame/ in this checkout),
then drives it with the `ame` CLI: runs with output, a failing run, a timeout, a burst, the run list, and
following an old run's history. It also validates and runs the example project locally. Every command is
printed before it runs, so this doubles as a tour of the CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".ame"
AME = [sys.executable, "-m", "ame.cli.main"]


def env() -> dict[str, str]:
    # The local server only: not an endpoint or token the user set up with `ame setup` / `ame login`.
    base = {k: v for k, v in os.environ.items() if not k.startswith("AME_")}
    return {**base, "AME_HOME": str(HOME), "AME_CONFIG_DIR": str(HOME / "config")}


def ame(*args: str, cwd: Path = ROOT, check_code: int | None = 0) -> int:
    shown = " ".join(args)
    print(f"\n$ ame {shown}", flush=True)
    code = subprocess.run([*AME, *args], env=env(), cwd=cwd).returncode
    print(f"(exit code {code})", flush=True)
    if check_code is not None and code != check_code:
        raise SystemExit(f"demo: expected exit code {check_code} from `ame {shown}`, got {code}")
    return code


def start_server() -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    info = HOME / "server" / "server.json"
    info.unlink(missing_ok=True)
    print("$ ame server   (in the background)", flush=True)
    server = subprocess.Popen([*AME, "server"], env=env())
    deadline = time.monotonic() + 90
    while not info.exists():
        if server.poll() is not None:
            raise SystemExit("demo: `ame server` exited; see its output above")
        if time.monotonic() > deadline:
            server.kill()
            raise SystemExit("demo: `ame server` did not become ready within 90 s")
        time.sleep(0.1)
    return server, json.loads(info.read_text())


def main() -> int:
    HOME.mkdir(exist_ok=True)
    server, _ = start_server()
    try:
        # Nothing typed: the server wrote its token (mode 0600) where the CLI finds it.
        ame("whoami")
        ame(
            "runs",
            "submit",
            "--project",
            "demo",
            "--task",
            "hello",
            "--",
            sys.executable,
            "-c",
            "print('hello from AME')",
        )
        ame(
            "runs",
            "submit",
            "--project",
            "demo",
            "--task",
            "train",
            "--env",
            "EPOCHS=3",
            "--",
            sys.executable,
            str(ROOT / "examples" / "train.py"),
        )
        ame(
            "runs",
            "submit",
            "--task",
            "broken",
            "--",
            sys.executable,
            "-c",
            "import sys; sys.exit('something broke')",
            check_code=1,
        )
        ame("runs", "submit", "--task", "slow", "--timeout", "1s", "--", "sleep", "30", check_code=124)
        for i in range(5):
            ame("runs", "submit", "--no-follow", "--task", f"burst-{i}", "--", "echo", f"burst {i}")
        ame("runs", "list", "--project", "default", "--limit", "10")
        first = json.loads(
            subprocess.run(
                [*AME, "runs", "list", "--json", "--project", "demo", "--limit", "100"],
                env=env(),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )[-1]
        ame("runs", "follow", first["id"])
        ame("runs", "get", "00000000-0000-7000-8000-000000000000", check_code=1)

        example = ROOT / "examples" / "hello"
        ame("validate", str(example))
        ame("task", "run", "-l", "hello", cwd=example)
        ame("task", "run", "-l", "pipeline", cwd=example)
    finally:
        print("\nstopping the server (SIGINT, as Ctrl-C does)", flush=True)
        server.send_signal(signal.SIGINT)
        code = server.wait(timeout=60)
    print(f"\nserver exited with {code}; its data stays in {HOME} for the next `make run`")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
