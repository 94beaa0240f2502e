"""The few Kubernetes API calls the backend makes, on kubernetes-asyncio, in wire form (plain dicts).

Responses are read raw (`_preload_content=False`) and parsed as JSON: the backend works on the API's own
field names, the same ones its manifests are written in, and is not bound to the client's generated models.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from ame_launcher.kubernetes.manifests import LABEL_MANAGED, MANAGED_BY
from ame_launcher.kubernetes.settings import KubernetesSettings

__all__ = ["ApiException", "KubeApi", "error_message"]

SELECTOR = f"{LABEL_MANAGED}={MANAGED_BY}"


async def _checked(pending: Any) -> Any:
    """The raw response of a call, or its ApiException: unpreloaded responses are not checked by the client."""
    response = await pending
    if isinstance(response, tuple):
        response = response[0]
    if not 200 <= response.status <= 299:
        try:
            body = await response.read()
        finally:
            response.release()
        exc = ApiException(status=response.status, reason=response.reason)
        exc.body = body
        raise exc
    return response


def error_message(exc: ApiException) -> str:
    """The API server's message of an error (its Status body), or the HTTP reason."""
    try:
        body = json.loads(exc.body or b"{}")
    except (ValueError, TypeError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or f"HTTP {exc.status}")


class KubeApi:
    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self._client = api_client
        # Untyped on purpose: every call passes wire-form dicts and reads the raw response (see above).
        self._core: Any = client.CoreV1Api(api_client)
        self.namespace = namespace

    @classmethod
    async def open(cls, settings: KubernetesSettings) -> KubeApi:
        configuration = client.Configuration()
        if settings.kubeconfig is not None:
            await config.load_kube_config(
                config_file=str(settings.kubeconfig), context=settings.context, client_configuration=configuration
            )
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return cls(client.ApiClient(configuration), settings.namespace)

    async def close(self) -> None:
        await self._client.close()

    async def _json(self, pending: Any) -> dict[str, Any]:
        response = await _checked(pending)
        try:
            data = await response.read()
        finally:
            response.release()
        parsed = json.loads(data or b"{}")
        return parsed if isinstance(parsed, dict) else {}

    async def create_pod(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json(self._core.create_namespaced_pod(self.namespace, body, _preload_content=False))

    async def read_pod(self, name: str) -> dict[str, Any] | None:
        try:
            return await self._json(self._core.read_namespaced_pod(name, self.namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def list_pods(self, selector: str = SELECTOR) -> tuple[list[dict[str, Any]], str]:
        """The pods AME manages (filtered here too: an emulator may ignore the selector) and the list's version."""
        answer = await self._json(
            self._core.list_namespaced_pod(self.namespace, label_selector=selector, _preload_content=False)
        )
        wanted = dict(part.split("=", 1) for part in selector.split(",") if "=" in part)
        items = [
            item
            for item in answer.get("items") or []
            if all((item.get("metadata", {}).get("labels") or {}).get(k) == v for k, v in wanted.items())
        ]
        return items, str((answer.get("metadata") or {}).get("resourceVersion") or "")

    async def delete_pod(self, name: str, grace_seconds: int | None = None) -> bool:
        """True if the pod was there to delete."""
        try:
            await self._json(
                self._core.delete_namespaced_pod(
                    name, self.namespace, grace_period_seconds=grace_seconds, _preload_content=False
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def create_secret(self, body: dict[str, Any]) -> None:
        try:
            await self._json(self._core.create_namespaced_secret(self.namespace, body, _preload_content=False))
        except ApiException as exc:
            if exc.status != 409:  # an earlier try of this attempt made it: the same plan
                raise

    async def read_secret(self, name: str) -> dict[str, Any] | None:
        try:
            return await self._json(self._core.read_namespaced_secret(name, self.namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def delete_secret(self, name: str) -> None:
        try:
            await self._json(self._core.delete_namespaced_secret(name, self.namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def watch_pods(self, resource_version: str, timeout: float) -> AsyncIterator[dict[str, Any]]:
        """Watch events (`{"type", "object"}`) from `resource_version` until the server ends the stream or
        `timeout` passes; an ERROR event is yielded as it comes (410 Gone among them)."""
        response = await _checked(
            self._core.list_namespaced_pod(
                self.namespace,
                label_selector=SELECTOR,
                watch=True,
                resource_version=resource_version or None,
                allow_watch_bookmarks=True,
                timeout_seconds=max(1, int(timeout)),
                _preload_content=False,
            )
        )
        try:
            async with asyncio.timeout(timeout + 5):  # an emulator may not honour timeoutSeconds
                while True:
                    line = await response.content.readline()
                    if not line:
                        return
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if isinstance(event, dict):
                        yield event
        except TimeoutError:
            return
        finally:
            response.release()

    async def pod_log(
        self, name: str, container: str, *, follow: bool, since_time: str | None = None
    ) -> AsyncIterator[str]:
        """The container's log lines, each prefixed by its RFC 3339 timestamp (`timestamps=true`).

        The generated client knows `sinceSeconds` only; `sinceTime`, which resuming needs, is a query parameter
        of the same endpoint."""
        query: list[tuple[str, Any]] = [("container", container), ("follow", follow), ("timestamps", True)]
        if since_time is not None:
            query.append(("sinceTime", since_time))
        response = await _checked(
            self._client.call_api(
                "/api/v1/namespaces/{namespace}/pods/{name}/log",
                "GET",
                {"namespace": self.namespace, "name": name},
                query,
                {"Accept": "text/plain"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=None,
            )
        )
        try:
            while True:
                raw = await response.content.readline()
                if not raw:
                    return
                yield raw.decode("utf-8", "replace").rstrip("\r\n")
        finally:
            response.release()
