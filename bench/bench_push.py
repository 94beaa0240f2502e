"""`ame project push` of a generated project: the first push, then unchanged re-pushes (target: <= 2 s, 0 bytes).

Starts `ame server` (its own nats-server, PostgreSQL and local object store in a temporary data directory) as a
subprocess, generates a project of `--files` files totalling `--size` bytes (default 1 GiB in 10,000 files) in a
temporary directory, and times `ame project push` as a user runs it (a new process each time, so the figures
include the CLI's start). The re-push reads the local hash index, so it stats the files instead of hashing them.

Run: uv run python bench/bench_push.py [--size 1G] [--files 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from embedded import ServerDidNotStart, embedded_server

TARGET_REPUSH_SECONDS = 2.0
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1] if text and text[-1] in _UNITS else ""
    return int(float(text.removesuffix(unit) or "0") * _UNITS[unit])


def generate(root: Path, total: int, files: int) -> None:
    """`files` files of random bytes in 100 directories (incompressible, so no store can cheat)."""
    (root / "ame.yml").write_text("project: bench\ntasks:\n  - name: t\n    executor: !custom\n      command: 'true'\n")
    each = max(1, total // files)
    block = os.urandom(1024 * 1024)
    for i in range(files):
        path = root / f"d{i % 100:02d}" / f"f{i:05d}.bin"
        path.parent.mkdir(exist_ok=True)
        # A unique head per file, so every file is its own blob; the rest repeats one random block.
        head = i.to_bytes(8, "little") + os.urandom(24)
        body = (block * (each // len(block) + 1))[: max(0, each - len(head))]
        path.write_bytes(head + body)


def push(project: Path, env: dict[str, str]) -> tuple[float, float, dict[str, object]]:
    """Wall seconds, the CLI process's CPU seconds (user + system), and its --json figures."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "ame.cli.main", "project", "push", str(project), "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"ame project push failed ({done.returncode}):\n{done.stderr}")
    figures: dict[str, object] = json.loads(done.stdout)
    return elapsed, cpu, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1G", help="Total project size (e.g. 1G, 256M).")
    parser.add_argument("--files", type=int, default=10_000)
    args = parser.parse_args()
    total = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="ame-bench-push-") as tmp:
        home, project = Path(tmp) / "home", Path(tmp) / "project"
        project.mkdir()
        # Bytecode cached as an installed CLI has it (in the temp dir, so nothing is written into the tree).
        env = {k: v for k, v in os.environ.items() if not k.startswith("AME_") and k != "PYTHONDONTWRITEBYTECODE"} | {
            "AME_HOME": str(home),
            "AME_CONFIG_DIR": str(Path(tmp) / "config"),
            "PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache"),
        }
        started = time.perf_counter()
        generate(project, total, args.files)
        print(f"generated {args.files} files, {total / 1024**2:.0f} MiB in {time.perf_counter() - started:.1f} s")
        try:
            with embedded_server(home, env, stop_timeout=60) as info:
                env["AME_GRPC_TARGET"] = info["grpc_target"]
                print(f"machine: {os.cpu_count()} cores; embedded server, local object store")
                load = os.getloadavg()[0]
                first_s, first_cpu, first = push(project, env)
                print(
                    f"first push:     {first_s:6.2f} s (CLI CPU {first_cpu:.2f} s)  "
                    f"uploaded {first['uploaded_files']} files, "
                    f"{int(str(first['uploaded_bytes'])) / 1024**2:.0f} MiB, hashed {first['hashed_files']} files"
                )
                # The median of three re-pushes: on a shared machine one figure can catch another job's burst.
                repushes = [push(project, env) for _ in range(3)]
                repushes.sort(key=lambda r: r[0])
                again_s, again_cpu, again = repushes[1]
                print(
                    f"unchanged push: {again_s:6.2f} s (CLI CPU {again_cpu:.2f} s)  "
                    f"uploaded {again['uploaded_files']} files, "
                    f"{again['uploaded_bytes']} bytes, hashed {again['hashed_files']} files "
                    f"(median of 3: {', '.join(f'{r[0]:.2f}' for r in repushes)} s; target <= "
                    f"{TARGET_REPUSH_SECONDS:.0f} s, 0 bytes)"
                )
                print(f"load average before the pushes: {load:.1f} on {os.cpu_count()} cores")
                ok = all(r[2]["uploaded_bytes"] == 0 for r in repushes) and again_s <= TARGET_REPUSH_SECONDS
                print("PASS" if ok else "FAIL")
                return 0 if ok else 1
        except ServerDidNotStart as exc:
            print(exc, file=sys.stderr)
            return 1


if __name__ == "__main__":
    raise SystemExit(main())
