"""The one table of what each endpoint needs: REST route (method, path template) and gRPC method -> scope.

An endpoint absent from this table is refused to every caller (and the isolation tests fail for it), so adding
an endpoint means adding its row here. `PUBLIC` endpoints take no token: health, the API description and the
gRPC health and reflection services. `run` may submit, cancel and push projects; `admin` manages the
organisation's tokens; `server-admin` manages organisations and operates the server (dead letters). `LAUNCHER`
and `SIGNED` endpoints take no token either: the method checks the launcher credential, the route a webhook
delivery's signature.
"""

from __future__ import annotations

import functools
import re
from typing import Final, Literal

from starlette.routing import compile_path

from ame.domain.principals import Scope

PUBLIC: Final = "public"
# Not a token's: the launcher credential, which the method itself checks (ame_api.secrets.launcher_auth).
LAUNCHER: Final = "launcher"
# Not a token's: a webhook delivery, signed with the hook's secret, which the route itself checks (ame_api.webhooks).
SIGNED: Final = "signed"
Need = Scope | Literal["public", "launcher", "signed"]

READ, RUN, ADMIN, SERVER_ADMIN = Scope.READ, Scope.RUN, Scope.ADMIN, Scope.SERVER_ADMIN

REST: dict[tuple[str, str], Need] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    # Runs
    ("POST", "/v1/runs"): RUN,
    ("GET", "/v1/runs"): READ,
    ("GET", "/v1/runs/{run_id}"): READ,
    ("POST", "/v1/runs/{run_id}/cancel"): RUN,
    ("GET", "/v1/runs/{run_id}/logs"): READ,
    ("POST", "/v1/runs/{run_id}/log-token"): READ,
    # Tasks and projects
    ("GET", "/v1/tasks"): READ,
    ("POST", "/v1/projects/{project}/missing-blobs"): RUN,
    ("PUT", "/v1/projects/{project}/blobs/{sha256}"): RUN,
    ("GET", "/v1/projects/{project}/blobs/{sha256}"): READ,
    ("POST", "/v1/projects/{project}/versions"): RUN,
    ("GET", "/v1/projects/{project}/versions"): READ,
    ("GET", "/v1/projects/{project}/versions/{version_id}"): READ,
    ("POST", "/v1/projects/{project}/versions/{version_id}/activate"): RUN,
    # Schedules (of each project's trigger version)
    ("GET", "/v1/schedules"): READ,
    ("POST", "/v1/schedules/{name}/pause"): RUN,
    ("POST", "/v1/schedules/{name}/resume"): RUN,
    ("POST", "/v1/schedules/{name}/trigger"): RUN,
    # PEACH task loops (seed 002)
    ("GET", "/v1/loops"): READ,
    # Models: train from a pushed version (starts runs), list
    ("POST", "/v1/models/{model}/train"): RUN,
    ("GET", "/v1/models"): READ,
    # Data sets (produced once, reused by every consumer)
    ("GET", "/v1/datasets"): READ,
    ("POST", "/v1/datasets/{project}/{name}/refresh"): RUN,
    ("POST", "/v1/datasets/{project}/{name}/prepare"): RUN,
    ("GET", "/v1/datasets/{project}/{name}/versions/{version_id}/blobs/{sha256}"): READ,
    # Who am I, tokens, organisations
    ("GET", "/v1/whoami"): READ,
    ("GET", "/v1/tokens"): ADMIN,
    ("POST", "/v1/tokens"): ADMIN,
    ("POST", "/v1/tokens/{token_id}/revoke"): ADMIN,
    ("GET", "/v1/organisations"): SERVER_ADMIN,
    ("POST", "/v1/organisations"): SERVER_ADMIN,
    ("PUT", "/v1/orgs/{org}/limits"): SERVER_ADMIN,
    ("GET", "/v1/orgs/{org}/limits"): SERVER_ADMIN,
    # Secrets: written with `run`, listed (names only) with `read`; nothing returns a value.
    ("PUT", "/v1/secrets/{name:path}"): RUN,
    ("GET", "/v1/secrets"): READ,
    ("DELETE", "/v1/secrets/{name:path}"): RUN,
    # Artifacts of runs
    ("GET", "/v1/runs/{run_id}/artifacts"): READ,
    ("GET", "/v1/runs/{run_id}/artifacts/{path:path}"): READ,
    # Webhooks: deliveries carry a signature instead of a token; the list is the organisation's.
    ("POST", "/v1/hooks/{org}/{project}/{task}"): SIGNED,
    ("GET", "/v1/hooks"): READ,
    # Git project sources; their push hooks carry a signature instead of a token.
    ("GET", "/v1/projectsrc"): READ,
    ("POST", "/v1/projectsrc"): RUN,
    ("DELETE", "/v1/projectsrc/{source_id}"): RUN,
    ("POST", "/v1/projectsrc/{source_id}/sync"): RUN,
    ("POST", "/v1/source-hooks/{org}/{source_id}"): SIGNED,
    # Operating the server
    ("GET", "/v1/admin/deadletters"): SERVER_ADMIN,
    ("POST", "/v1/admin/deadletters/{letter_id}/replay"): SERVER_ADMIN,
}

GRPC: dict[str, Need] = {
    "/grpc.health.v1.Health/Check": PUBLIC,
    "/grpc.health.v1.Health/Watch": PUBLIC,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": PUBLIC,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": PUBLIC,
    "/ame.contracts.api.v1.AmeService/SubmitRun": RUN,
    "/ame.contracts.api.v1.AmeService/GetRun": READ,
    "/ame.contracts.api.v1.AmeService/ListRuns": READ,
    "/ame.contracts.api.v1.AmeService/CancelRun": RUN,
    "/ame.contracts.api.v1.AmeService/FollowLogs": READ,
    "/ame.contracts.api.v1.AmeService/FindMissingBlobs": RUN,
    "/ame.contracts.api.v1.AmeService/UploadBlob": RUN,
    "/ame.contracts.api.v1.AmeService/CommitProjectVersion": RUN,
    "/ame.contracts.api.v1.AmeService/ListProjectVersions": READ,
    "/ame.contracts.api.v1.AmeService/GetProjectVersion": READ,
    "/ame.contracts.api.v1.AmeService/DownloadBlob": READ,
    "/ame.contracts.api.v1.AmeService/ListTasks": READ,
    "/ame.contracts.api.v1.AmeService/WhoAmI": READ,
    "/ame.contracts.api.v1.AmeService/CreateToken": ADMIN,
    "/ame.contracts.api.v1.AmeService/ListTokens": ADMIN,
    "/ame.contracts.api.v1.AmeService/RevokeToken": ADMIN,
    "/ame.contracts.api.v1.AmeService/CreateOrganisation": SERVER_ADMIN,
    "/ame.contracts.api.v1.AmeService/ListOrganisations": SERVER_ADMIN,
    "/ame.contracts.api.v1.AmeService/ActivateProjectVersion": RUN,
    "/ame.contracts.api.v1.AmeService/ListSchedules": READ,
    "/ame.contracts.api.v1.AmeService/PauseSchedule": RUN,
    "/ame.contracts.api.v1.AmeService/ResumeSchedule": RUN,
    "/ame.contracts.api.v1.AmeService/TriggerSchedule": RUN,
    # Orchestrations and their tasks (seed 004)
    "/ame.contracts.api.v1.AmeService/UploadOrchestration": RUN,
    "/ame.contracts.api.v1.AmeService/ListOrchestrations": READ,
    "/ame.contracts.api.v1.AmeService/GetOrchestration": READ,
    "/ame.contracts.api.v1.AmeService/DeleteOrchestration": RUN,
    "/ame.contracts.api.v1.AmeService/StartOrchestrationTask": RUN,
    "/ame.contracts.api.v1.AmeService/ListOrchestrationTasks": READ,
    "/ame.contracts.api.v1.AmeService/GetOrchestrationTask": READ,
    "/ame.contracts.api.v1.AmeService/KillOrchestrationTask": RUN,
    "/ame.contracts.api.v1.AmeService/ListOrchestrationTaskRuns": READ,
    "/ame.contracts.api.v1.AmeService/ListDataSets": READ,
    "/ame.contracts.api.v1.AmeService/RefreshDataSet": RUN,
    "/ame.contracts.api.v1.AmeService/GetDataSet": RUN,
    "/ame.contracts.api.v1.AmeService/DownloadDataSetBlob": READ,
    "/ame.contracts.api.v1.AmeService/SetOrganisationLimits": SERVER_ADMIN,
    "/ame.contracts.api.v1.AmeService/GetOrganisationLimits": SERVER_ADMIN,
    "/ame.contracts.api.v1.AmeService/PutSecret": RUN,
    "/ame.contracts.api.v1.AmeService/ListSecrets": READ,
    "/ame.contracts.api.v1.AmeService/DeleteSecret": RUN,
    "/ame.contracts.api.v1.AmeService/ResolveRunSecrets": LAUNCHER,
    "/ame.contracts.api.v1.AmeService/ListRunArtifacts": READ,
    "/ame.contracts.api.v1.AmeService/DownloadArtifact": READ,
    "/ame.contracts.api.v1.AmeService/ListWebhooks": READ,
    "/ame.contracts.api.v1.AmeService/AddProjectSource": RUN,
    "/ame.contracts.api.v1.AmeService/ListProjectSources": READ,
    "/ame.contracts.api.v1.AmeService/RemoveProjectSource": RUN,
    "/ame.contracts.api.v1.AmeService/SyncProjectSource": RUN,
    "/ame.contracts.api.v1.AmeService/TrainModel": RUN,
    "/ame.contracts.api.v1.AmeService/ListModels": READ,
}


def _plain(template: str) -> str:
    """The template without its convertors (`{path:path}` -> `{path}`), as OpenAPI documents write it."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", template)


@functools.cache
def _plain_rest() -> dict[tuple[str, str], Need]:
    return {(method, _plain(template)): need for (method, template), need in REST.items()}


def rest_need(method: str, path_template: str) -> Need | None:
    """What the route needs; None for a route nobody declared (refused). The template may be written with or
    without its convertors."""
    # A HEAD is answered by the GET route and needs what it needs.
    return _plain_rest().get(("GET" if method == "HEAD" else method, _plain(path_template)))


@functools.cache
def _compiled() -> list[tuple[re.Pattern[str], str]]:
    # Starlette's own path compiler, so a template matches exactly the requests its route does.
    return [(compile_path(template)[0], template) for template in dict.fromkeys(t for _, t in REST)]


def match_rest(method: str, path: str) -> tuple[str, Need | None]:
    """The declared template `path` matches ('' for none) and what the method needs there (None: undeclared)."""
    for pattern, template in _compiled():
        if pattern.match(path):
            return template, rest_need(method, template)
    return "", None


def grpc_need(full_method: str) -> Need | None:
    """What the method (`/package.Service/Method`) needs; None for a method nobody declared (refused)."""
    return GRPC.get(full_method)
