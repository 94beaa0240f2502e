"""Remote `ame task run` of an unchanged project with a warm environment: command start -> first output line.

Starts `ame server` (embedded default) in a temporary AME home, makes a small `!pip` project (one real
dependency, `six`), runs its task once remotely to push the version and build the launcher's environment, then
runs `ame task run train` N more times as a user does (a subprocess of the real CLI, nothing changed in between)
and measures, from just before the process is started, when its first stdout line arrives and when it exits.

    uv run python bench/bench_first_output.py [--runs 10] [--profile-cli]

Target: first output line p50 <= 1 s. --profile-cli also prints the CLI's slowest imports (python -X importtime)
and its top cProfile entries for one run.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from embedded import ServerDidNotStart, embedded_server

AME = [sys.executable, "-m", "ame.cli.main"]
AME_YML = """\
project: firstline
tasks:
  - name: train
    executor:
      !pip
      command: python train.py
"""
TRAIN_PY = """\
import six
print("training with six", six.__version__, flush=True)
"""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def one_run(project: Path, env: dict[str, str]) -> tuple[float, float, float, str]:
    """(seconds to the first stdout line, seconds to exit, CPU seconds of the CLI process, the line).

    The CLI's CPU time (user + system, from the kernel's accounting of waited-for children) does not grow with
    the machine's load the way wall-clock time does on shared cores, so it tells CLI-side changes apart."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*AME, "task", "run", "train"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    first = time.perf_counter() - start
    _, err = proc.communicate(timeout=120)
    total = time.perf_counter() - start
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"ame task run failed ({proc.returncode}): {err.decode()[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return first, total, cpu, line.decode().rstrip("\n")


def profile_cli(project: Path, env: dict[str, str]) -> None:
    """Where one CLI run spends its time: the slowest imports, then the top of cProfile by cumulative time."""
    imports = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ame.cli.main", "task", "run", "train"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for row in imports.stderr.splitlines():
        if row.startswith("import time:") and "|" in row:
            parts = [part.strip() for part in row.removeprefix("import time:").split("|")]
            if parts[1].isdigit():
                rows.append((int(parts[1]), parts[2]))
    print("slowest imports (cumulative µs):")
    for micros, name in sorted(rows, reverse=True)[:15]:
        print(f"  {micros:>8}  {name}")
    out = Path(tempfile.mkdtemp()) / "cli.prof"
    subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "ame.cli.main", "task", "run", "train"],
        cwd=project,
        env=env,
        capture_output=True,
        check=True,
    )
    import pstats

    print("cProfile, top 20 by cumulative time:")
    pstats.Stats(str(out)).sort_stats("cumulative").print_stats(20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--profile-cli", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ame-bench-first-") as tmp:
        home = Path(tmp) / "home"
        project = Path(tmp) / "firstline"
        project.mkdir()
        (project / "ame.yml").write_text(AME_YML)
        (project / "train.py").write_text(TRAIN_PY)
        (project / "requirements.txt").write_text("six==1.16.0\n")
        # PYTHONDONTWRITEBYTECODE (set in some sandboxes) makes every CLI start compile AME from source, about
        # 0.6 s on this machine; an installed AME has its bytecode, so the CLI here runs with it too.
        base = {k: v for k, v in os.environ.items() if not k.startswith("AME_") and k != "PYTHONDONTWRITEBYTECODE"}
        env = base | {"AME_HOME": str(home)}
        try:
            with embedded_server(home, base, stop_timeout=60):
                cold_first, cold_total, _, _ = one_run(project, env)  # pushes the version, builds the environment
                print(f"cold (push + build the environment): first line {cold_first:.2f} s, exit {cold_total:.2f} s")
                firsts, totals, cpus = [], [], []
                for _ in range(args.runs):
                    first, total, cpu, line = one_run(project, env)
                    firsts.append(first)
                    totals.append(total)
                    cpus.append(cpu)
                print(f"machine: {os.cpu_count()} cores; {args.runs} warm runs of `ame task run train` ({line!r})")
                print(
                    f"first output line: p50 {pct(firsts, 50):.3f} s  p95 {pct(firsts, 95):.3f} s  "
                    f"min {min(firsts):.3f} s  mean {statistics.mean(firsts):.3f} s   (target p50 <= 1 s)"
                )
                print(f"command exit:      p50 {pct(totals, 50):.3f} s  p95 {pct(totals, 95):.3f} s")
                print(f"CLI CPU time:      p50 {pct(cpus, 50):.3f} s  (load average {os.getloadavg()[0]:.1f})")
                if args.profile_cli:
                    profile_cli(project, env)
        except ServerDidNotStart as exc:
            print(exc, file=sys.stderr)
            return 1
    return 0 if pct(firsts, 50) <= 1.0 else 2


if __name__ == "__main__":
    raise SystemExit(main())
