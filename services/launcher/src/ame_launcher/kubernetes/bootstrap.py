"""What a run pod executes: the init container's fetch script and the runner zipapp of the main container.

Both use only Python's standard library, so they run on any image with a `python3` (the init container's
stock image; the task's image for the runner). The plan they follow is the run's Secret, mounted as files:
`plan.json` lists the project version's files and the data sets with the URLs to fetch them from, the runner's
URL, the task (command, executor) and the artifact upload form, all scoped to this run.

The runner frames every line it prints as `<seq> <stream> <text>`: the backend reads the stream names back
(the kubelet's log merges stdout and stderr) and notices from a jump in `seq` a gap the kubelet no longer holds.
"""

from __future__ import annotations

import io
import zipfile
from functools import cache
from pathlib import Path

ENV_WORK = "AME_POD_WORK"
ENV_PLAN = "AME_POD_PLAN"
ENV_CACHE = "AME_POD_CACHE"
PLAN_FILE = "plan.json"
RUNNER_FILE = "runner.pyz"
PROJECT_DIR = "project"
DATA_DIR = "data"

FETCH_SCRIPT = r"""
import hashlib, json, os, sys, time, urllib.request
work = os.environ.get("AME_POD_WORK", "/ame")

def fetch(url, dest, sha256=None):
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    for attempt in range(5):
        try:
            with urllib.request.urlopen(url, timeout=600) as answer:
                data = answer.read()
            break
        except OSError as exc:
            if attempt == 4:
                sys.exit("ame: could not fetch %s: %s" % (os.path.basename(dest), exc))
            time.sleep(0.5 * 2 ** attempt)
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        sys.exit("ame: %s does not match its sha256" % dest)
    with open(dest, "wb") as out:
        out.write(data)

# The plan itself, or a URL to it (a large plan is kept in the object store); the runner reads it from the work
# volume either way.
plan = json.load(open(os.path.join(os.environ.get("AME_POD_PLAN", "/ame-plan"), "plan.json")))
plan_file = os.path.join(work, "plan.json")
if "plan_url" in plan:
    fetch(plan["plan_url"], plan_file)
    plan = json.load(open(plan_file))
else:
    with open(plan_file, "w") as out:
        json.dump(plan, out)
fetch(plan["runner_url"], os.path.join(work, "runner.pyz"))
project = os.path.join(work, "project")
os.makedirs(project, exist_ok=True)
for entry in plan.get("files", []):
    fetch(entry["url"], os.path.join(project, entry["path"]), entry.get("sha256"))
    if entry.get("executable"):
        os.chmod(os.path.join(project, entry["path"]), 0o755)
# Data sets: each entry's files land under data/<name>/ (the hook the data-set feature fills in).
for data_set in plan.get("data_sets", []):
    for entry in data_set.get("files", []):
        fetch(entry["url"], os.path.join(work, "data", data_set["name"], entry["path"]), entry.get("sha256"))
print("ame: fetched %d file(s)" % len(plan.get("files", [])))
"""

RUNNER_MAIN = r'''
"""The AME runner of a pod: sets up the executor's environment, runs the task, uploads its artifacts."""
import glob, hashlib, json, os, stat, subprocess, sys, threading, urllib.request, uuid

work = os.environ.get("AME_POD_WORK", "/ame")
cache = os.environ.get("AME_POD_CACHE", "/ame-cache")
# Written by the init container (the Secret may hold only a URL to it).
plan = json.load(open(os.path.join(work, "plan.json")))
task = plan["task"]
project = os.path.join(work, "project")
lock = threading.Lock()
seq = [0]

def emit(stream, text):
    with lock:
        sys.stdout.write("%d %s %s\n" % (seq[0], stream, text))
        sys.stdout.flush()
        seq[0] += 1

# The task's secret values (and each line of a multi-line one), longest first, as `-l` masks them
# (ame.runner.process.mask_secrets): never printed into the run's log.
masks = set()
for name in task.get("secret_env", []):
    value = os.environ.get(name, "")
    if value:
        masks.add(value)
        masks.update(part for part in value.splitlines() if part.strip())
masks = sorted(masks, key=len, reverse=True)

def masked(text):
    for secret in masks:
        if secret in text:
            text = text.replace(secret, "***")
    return text

def pump(pipe, stream):
    for raw in iter(pipe.readline, b""):
        emit(stream, masked(raw.decode("utf-8", "replace").rstrip("\r\n")))

def environment():
    env = dict(os.environ)
    for key in ("AME_POD_WORK", "AME_POD_PLAN", "AME_POD_CACHE"):
        env.pop(key, None)
    args_file = os.path.join(work, "task_args.json")
    with open(args_file, "w") as out:
        json.dump(task.get("args"), out)
    env["AME_TASK_ARGS_FILE"] = args_file
    encoded = json.dumps(task.get("args"))
    if len(encoded) <= 32768:
        env["AME_TASK_ARGS"] = encoded
    requirements = os.path.join(project, "requirements.txt")
    if task.get("executor") == "pip" and os.path.exists(requirements):
        # One environment per lock file, shared through the cache volume by every pod that mounts it.
        digest = hashlib.sha256(open(requirements, "rb").read() + sys.version.encode()).hexdigest()[:24]
        venv = os.path.join(cache, "envs", digest)
        if not os.path.exists(os.path.join(venv, ".ready")):
            emit("s", "ame: building the environment %s" % digest)
            code = subprocess.call([sys.executable, "-m", "venv", venv])
            code = code or subprocess.call(
                [os.path.join(venv, "bin", "pip"), "install", "-q", "-r", requirements], stdout=sys.stderr
            )
            if code:
                emit("s", "ame: the environment could not be built (exit %d)" % code)
                sys.exit(code)
            open(os.path.join(venv, ".ready"), "w").close()
        else:
            emit("s", "ame: reusing the environment %s" % digest)
        env["VIRTUAL_ENV"] = venv
        env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env.get("PATH", "")
    return env

def upload(form, key, data):
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in list(form["fields"].items()) + [("key", key)]:
        head = '--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n' % (boundary, name)
        parts.append((head + "%s\r\n" % value).encode())
    parts.append(('--%s\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n' % boundary).encode())
    body = b"".join(parts) + data + ("\r\n--%s--\r\n" % boundary).encode()
    request = urllib.request.Request(form["url"], data=body, method="POST")
    request.add_header("Content-Type", "multipart/form-data; boundary=%s" % boundary)
    urllib.request.urlopen(request, timeout=600).read()

# Never saved as changed files: VCS data and bytecode the run itself produces by importing modules (as locally).
NEVER_CHANGED = {".git", "__pycache__", ".ame"}

def snapshot():
    """Size and mtime of every regular file under the project (the local runner's snapshot)."""
    found = {}
    if not task.get("save_changed_files"):
        return found
    for folder, folders, names in os.walk(project):
        folders[:] = [name for name in folders if name not in NEVER_CHANGED]
        for name in names:
            path = os.path.join(folder, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                found[os.path.relpath(path, project).replace(os.sep, "/")] = (info.st_size, info.st_mtime_ns)
    return found

def digest(path):
    sha = hashlib.sha256()
    with open(path, "rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()

def changed_files(before):
    """New or changed files: a size or mtime that moved, unless the bytes are still those the plan placed."""
    placed = {entry["path"]: entry.get("sha256") for entry in plan.get("files", [])}
    changed = []
    for relative, state in snapshot().items():
        if before.get(relative) == state:
            continue
        path = os.path.join(project, relative)
        if placed.get(relative) and digest(path) == placed[relative]:
            continue
        changed.append(path)
    return changed

def save_artifacts(before):
    form = plan.get("artifacts")
    if not form:
        return
    found = set()
    for pattern in task.get("artifact_paths", []):
        target = os.path.join(project, pattern)
        if os.path.isdir(target):
            for folder, _, names in os.walk(target):
                found.update(os.path.join(folder, name) for name in names)
        else:
            found.update(path for path in glob.glob(target, recursive=True) if os.path.isfile(path))
    if task.get("save_changed_files"):
        found.update(changed_files(before))
    listing = []
    for relative in sorted({os.path.relpath(path, project).replace(os.sep, "/") for path in found}):
        if any(ord(char) < 32 or char in "\\\x7f" for char in relative):
            emit("s", "ame: artifact %r not saved: its name cannot be an object key" % relative)
            continue
        data = open(os.path.join(project, relative), "rb").read()
        upload(form, form["prefix"] + relative, data)
        listing.append({"path": relative, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    # What was saved, for the launcher to index once the pod has ended.
    upload(form, form["listing"], json.dumps(listing).encode())
    if listing:
        emit("s", "ame: saved %d artifact(s)" % len(listing))

before = snapshot()
process = subprocess.Popen(
    ["/bin/sh", "-c", task["command"]], cwd=project, env=environment(),
    stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
)
threads = [
    threading.Thread(target=pump, args=(process.stdout, "o")),
    threading.Thread(target=pump, args=(process.stderr, "e")),
]
for thread in threads:
    thread.start()
code = process.wait()
for thread in threads:
    thread.join()
try:
    save_artifacts(before)
except OSError as exc:
    emit("s", "ame: the artifacts could not be saved: %s" % exc)
    code = code or 1
sys.exit(code)
'''


@cache
def runner_zipapp() -> bytes:
    """The runner as a zipapp (deterministic bytes, so its object-store key is its sha256)."""
    # A zip with a __main__.py is what zipapp writes; built here by hand to fix the timestamps.
    target = io.BytesIO()
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("__main__.py", date_time=(2026, 1, 1, 0, 0, 0)), RUNNER_MAIN)
    return target.getvalue()


def write_runner(path: Path) -> None:
    path.write_bytes(runner_zipapp())
