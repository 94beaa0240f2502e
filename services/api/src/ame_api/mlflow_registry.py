"""Link a model version to the MLflow registry version its training run registered (AME_MLFLOW_TRACKING_URI).

A registry version belongs to a training run when the version, or the MLflow run it was made from, carries the tag
`ame.run_id` with the AME run's id (the run has it as `AME_RUN_ID`). The registry is read through MLflow's REST
API; when MLflow cannot be reached the version is simply not linked yet (asked again next time), never an error.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from ame_platform.mlflow import MlflowSettings

log = logging.getLogger(__name__)

AME_RUN_TAG = "ame.run_id"
_MAX_VERSIONS = 200


def _tags(entries: Any) -> dict[str, str]:
    if not isinstance(entries, list):
        return {}
    return {str(t.get("key")): str(t.get("value")) for t in entries if isinstance(t, dict)}


async def registry_version(settings: MlflowSettings, model: str, run_id: str) -> str:
    """The newest registry version of `model` made by AME run `run_id`; "" when none (or MLflow is unset/away)."""
    if not settings.tracking_uri or not run_id:
        return ""
    base = settings.tracking_uri.rstrip("/")
    try:
        async with httpx.AsyncClient(base_url=base, timeout=settings.timeout) as client:
            response = await client.get(
                "/api/2.0/mlflow/model-versions/search",
                params={"filter": f"name='{model}'", "max_results": _MAX_VERSIONS},
            )
            if response.status_code == 404:
                return ""
            response.raise_for_status()
            versions = response.json().get("model_versions", [])
            versions.sort(key=lambda v: int(v.get("version", 0)), reverse=True)
            runs: dict[str, dict[str, str]] = {}
            for version in versions:
                if _tags(version.get("tags")).get(AME_RUN_TAG) == run_id:
                    return str(version["version"])
                mlflow_run = str(version.get("run_id") or "")
                if not mlflow_run:
                    continue
                if mlflow_run not in runs:
                    found = await client.get("/api/2.0/mlflow/runs/get", params={"run_id": mlflow_run})
                    data = found.json().get("run", {}).get("data", {}) if found.status_code == 200 else {}
                    runs[mlflow_run] = _tags(data.get("tags"))
                if runs[mlflow_run].get(AME_RUN_TAG) == run_id:
                    return str(version["version"])
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        log.warning("MLflow registry at %s: could not look up model %r: %s", base, model, exc)
    return ""
