"""Webhooks through `ame server` and the CLI: push a project whose task has a webhook, deliver to it signed, and
`ame hooks list` shows the hook's URL and the delivery with its run; the run printed the payload."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_ame_server import AME, Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

AME_YML = """\
project: hooked
tasks:
  - name: deploy
    executor: !custom
      command: python show.py
    triggers:
      webhook:
        secret: DEPLOY_HOOK_KEY
"""
SHOW_PY = """\
import os
print("args:", os.environ["AME_TASK_ARGS"], flush=True)
print("file:", open(os.environ["AME_TASK_ARGS_FILE"]).read(), flush=True)
"""


def test_a_signed_delivery_runs_the_task_and_hooks_list_shows_it(ame_server: Server, tmp_path: Path) -> None:
    info = ame_server.start()
    key = f"hook-{secrets.token_hex(16)}"
    added = subprocess.run(
        [*AME, "secret", "add", "DEPLOY_HOOK_KEY", "--value-stdin"],
        capture_output=True,
        text=True,
        env=ame_server.env,
        timeout=60,
        input=key + "\n",
    )
    assert added.returncode == 0, added.stderr

    project = tmp_path / "project"
    project.mkdir()
    (project / "ame.yml").write_text(AME_YML)
    (project / "show.py").write_text(SHOW_PY)
    pushed = ame_server.ame_in(project, "project", "push")
    assert pushed.returncode == 0, pushed.stderr

    listed = ame_server.ame("hooks", "list")
    assert listed.returncode == 0, listed.stderr
    url = f"{info['rest_url']}/v1/hooks/default/hooked/deploy"
    assert f"hooked/deploy  POST {url}  (secret DEPLOY_HOOK_KEY)" in listed.stdout, listed.stdout
    assert "no deliveries yet" in listed.stdout

    body = json.dumps({"release": "v1.2.3"}).encode()
    signature = hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": f"sha256={signature}", "X-GitHub-Delivery": "gh-delivery-1"}
    response = httpx.post(url, content=body, headers=headers, timeout=30)
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    assert key not in response.text

    followed = ame_server.ame("runs", "follow", run_id)
    assert followed.returncode == 0, followed.stderr
    assert 'args: {"release":"v1.2.3"}' in followed.stdout.splitlines(), followed.stdout
    assert 'file: {"release":"v1.2.3"}' in followed.stdout.splitlines(), followed.stdout

    listed = ame_server.ame("hooks", "list")
    assert listed.returncode == 0, listed.stderr
    delivery = next(line for line in listed.stdout.splitlines() if "gh-delivery-1" in line)
    assert "202 run started" in delivery and run_id in delivery, listed.stdout
    assert key not in listed.stdout + listed.stderr
    assert ame_server.stop() == 0
    assert key not in ame_server.log.read_text()
