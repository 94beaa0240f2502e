"""How many pods per second the kubernetes backend creates and watches, against the API emulator (kmock).

For reference, not a load target: the emulator scans its whole request journal on every request, so its cost
grows with the requests made (reliability notes §3.2), and a real API server behaves nothing like it. What
this times is the backend's own path: the run's pod manifest built and created (`KubeApi.create_pod`,
`concurrency` at a time), then every pod's status patched to Succeeded (as a kubelet would) and seen ended by
the backend's shared watch (`PodWatcher`), which each pod's run waits on.

    uv run python bench/bench_kubernetes_pods.py [--pods 100] [--concurrency 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ame.bus_messages import LaunchCommand
from ame.domain import RunSpec, new_run_id
from ame.domain.resources import Resources
from ame_launcher.kubernetes import manifests, pod_status
from ame_launcher.kubernetes.kubeapi import KubeApi
from ame_launcher.kubernetes.settings import KubernetesSettings
from ame_launcher.kubernetes.watcher import PodWatcher
from tests.k8s_fake import emulator, write_kubeconfig

NAMESPACE = "bench"


async def bench(pods: int, concurrency: int) -> None:
    async with emulator() as (_km, url):
        with tempfile.TemporaryDirectory() as tmp:
            kubeconfig = write_kubeconfig(Path(tmp) / "kubeconfig.json", url, NAMESPACE)
            settings = KubernetesSettings(kubeconfig=kubeconfig, namespace=NAMESPACE, reconnect_delay=0.1)
            api = await KubeApi.open(settings)
            watcher = PodWatcher(api, settings)
            spec = RunSpec(command="python train.py", resources=Resources(cpu_millis=1000, memory_bytes=2**30, gpus=1))
            commands = [LaunchCommand(new_run_id(), 1, "default", spec) for _ in range(pods)]
            states = {c.run_id: watcher.subscribe(manifests.names(c.run_id, 1).pod) for c in commands}
            gate = asyncio.Semaphore(concurrency)

            async def create(command: LaunchCommand) -> None:
                body = manifests.pod_manifest(command, settings, secret_keys=[], gpu_model=None, grace_seconds=10)
                async with gate:
                    await api.create_pod(body)

            started = time.perf_counter()
            await asyncio.gather(*(create(c) for c in commands))
            created = time.perf_counter() - started

            async with aiohttp.ClientSession() as session:

                async def succeed(command: LaunchCommand) -> None:
                    name = manifests.names(command.run_id, 1).pod
                    status = {"status": {"phase": "Succeeded"}}
                    async with (
                        gate,
                        session.patch(
                            f"{url}/api/v1/namespaces/{NAMESPACE}/pods/{name}/status", json=status
                        ) as response,
                    ):
                        response.raise_for_status()

                started = time.perf_counter()
                await asyncio.gather(*(succeed(c) for c in commands))

                async def all_seen() -> None:
                    for state in states.values():
                        while state.pod is None or pod_status.outcome(state.pod) is None:
                            state.changed.clear()
                            await state.changed.wait()

                await asyncio.wait_for(all_seen(), timeout=300)
                watched = time.perf_counter() - started
            await watcher.close()
            await api.close()
    print(
        f"pods={pods} concurrency={concurrency}: created {pods / created:.0f} pods/s ({created:.2f} s); "
        f"ended and seen by the watch {pods / watched:.0f} pods/s ({watched:.2f} s); "
        f"watch events {watcher.events}, relists {watcher.relists}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(bench(args.pods, args.concurrency))


if __name__ == "__main__":
    main()
