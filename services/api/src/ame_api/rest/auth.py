"""Authentication of every REST request, before anything else reads it (its body included).

An ASGI layer matches the request against the scope table (`ame_api.scopes`: method and path template), and
answers 401 (no or bad token) or 403 (token without the scope) itself; otherwise it puts the caller's Principal
in the request state, where routes take it with `CurrentPrincipal`. A request the table does not declare is
answered 404 (or 405) here, so a route missing from the table is unreachable rather than open.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qs

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ame.domain.principals import Principal, PrincipalKind
from ame.domain.principals import Scope as AccessScope
from ame_api import scopes
from ame_api.auth import Forbidden, TokenService, Unauthenticated

# Only for routes that cannot carry a header: a browser's EventSource following a run's logs.
QUERY_TOKEN_ROUTES = {("GET", "/v1/runs/{run_id}/logs")}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def bearer_token(scope: Scope) -> str | None:
    value = _header(scope, b"authorization")
    if value is None:
        return None
    kind, _, token = value.partition(" ")
    return token.strip() if kind.lower() == "bearer" else ""


def _query_token(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


class Authenticate:
    def __init__(self, app: ASGIApp, tokens: TokenService) -> None:
        self.app = app
        self._tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        path, need = scopes.match_rest(method, scope.get("path", ""))
        if need is None:
            # Not in the scope table: refused, whether or not a route serves it.
            status, message = (405, "method not allowed") if path else (404, "not found")
            await JSONResponse(status_code=status, content={"error": message})(scope, receive, send)
            return
        if not isinstance(need, AccessScope):  # public
            await self.app(scope, receive, send)
            return
        try:
            token = bearer_token(scope)
            in_url = token is None and (method, path) in QUERY_TOKEN_ROUTES and _query_token(scope) is not None
            if in_url:
                token = _query_token(scope)
            principal = await self._tokens.authenticate(token)
            if in_url and principal.kind is not PrincipalKind.RUN:
                # A URL ends up in logs and browser history: only a short-lived run-scoped token may travel there.
                raise Unauthenticated("only a run's log token (POST /v1/runs/{run_id}/log-token) may be in the URL")
            if not principal.allows(need):
                raise Forbidden(f"this needs a token with scope {need.value}; yours has {principal.scope.value}")
            if principal.kind is PrincipalKind.RUN and scope.get("path") != f"/v1/runs/{principal.subject}/logs":
                raise Forbidden("this token only follows the logs of its run")
        except Unauthenticated as exc:
            response = JSONResponse(
                status_code=401, content={"error": str(exc)}, headers={"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        except Forbidden as exc:
            await JSONResponse(status_code=403, content={"error": str(exc)})(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


async def _principal(request: Request) -> Principal:
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):  # only a route the scope table marks public lacks one
        raise RuntimeError(f"{request.method} {request.url.path} has no authenticated principal")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(_principal)]
