"""Authentication of every gRPC call: a server interceptor reads the `authorization` metadata (`Bearer <token>`),
checks the method's scope in the scope table (`ame_api.scopes`) and either refuses the call (UNAUTHENTICATED,
PERMISSION_DENIED) or runs the method with the caller's Principal, which the method takes with `caller()`.

A method missing from the table is refused to everyone; health and reflection are public.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from ame.domain.principals import Principal, PrincipalKind, Scope
from ame_api import scopes
from ame_api.auth import Forbidden, TokenService, Unauthenticated
from ame_platform.faults import is_transient

log = logging.getLogger(__name__)

_CALLER: contextvars.ContextVar[Principal] = contextvars.ContextVar("ame_api_caller")
_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def caller() -> Principal:
    """The Principal of the call being served."""
    try:
        return _CALLER.get()
    except LookupError:
        raise RuntimeError("no authenticated caller: the method is not behind the auth interceptor") from None


def bearer_token(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            kind, _, token = text.partition(" ")
            return token.strip() if kind.lower() == "bearer" else ""
    return None


def _refusal(code: grpc.StatusCode, message: str, trailers: tuple[tuple[str, str], ...] = ()) -> Callable[..., Any]:
    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, message, trailing_metadata=trailers)

    return refuse


def _with_caller(behavior: Callable[..., Any], streaming: bool, principal: Principal) -> Callable[..., Any]:
    if streaming:

        async def stream(request: Any, context: Any) -> Any:
            _CALLER.set(principal)
            async for response in behavior(request, context):
                yield response

        return stream

    async def unary(request: Any, context: Any) -> Any:
        _CALLER.set(principal)
        return await behavior(request, context)

    return unary


def _replace(
    handler: grpc.RpcMethodHandler[Any, Any], make: Callable[[Callable[..., Any], bool], Callable[..., Any]]
) -> grpc.RpcMethodHandler[Any, Any]:
    # The handler is grpc's RpcMethodHandler namedtuple: the behaviour of its kind is swapped, the (de)serialisers
    # kept.
    for kind in _KINDS:
        behavior = getattr(handler, kind)
        if behavior is not None:
            replaced: grpc.RpcMethodHandler[Any, Any] = handler._replace(  # type: ignore[attr-defined]
                **{kind: make(behavior, kind.endswith("_stream"))}
            )
            return replaced
    return handler


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: TokenService, retry_after_seconds: int = 2) -> None:
        self._tokens = tokens
        self._retry_after = retry_after_seconds

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # UNIMPLEMENTED, from grpc itself
        method = handler_call_details.method
        need = scopes.grpc_need(method)
        if need in (scopes.PUBLIC, scopes.LAUNCHER):
            return handler  # a launcher's call is checked by the method, against the launcher credential
        try:
            if not isinstance(need, Scope):
                raise Forbidden(f"{method} declares no scope, so it is refused (ame_api.scopes)")
            principal = await self._tokens.authenticate(bearer_token(handler_call_details.invocation_metadata))
            if not principal.allows(need):
                raise Forbidden(f"this needs a token with scope {need.value}; yours has {principal.scope.value}")
            if principal.kind is PrincipalKind.RUN:
                raise Forbidden("a run's log token only follows that run's logs over REST")
        except Unauthenticated as exc:
            unauthenticated = _refusal(grpc.StatusCode.UNAUTHENTICATED, str(exc))
            return _replace(handler, lambda _b, _s: unauthenticated)
        except Forbidden as exc:
            forbidden = _refusal(grpc.StatusCode.PERMISSION_DENIED, str(exc))
            return _replace(handler, lambda _b, _s: forbidden)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("%s: cannot check the caller's token: %r", method, exc)
            refusal = _refusal(
                grpc.StatusCode.UNAVAILABLE,
                "service temporarily unavailable; retry later",
                (("retry-after", str(self._retry_after)),),
            )
            return _replace(handler, lambda _b, _s: refusal)
        return _replace(handler, lambda behavior, streaming: _with_caller(behavior, streaming, principal))
