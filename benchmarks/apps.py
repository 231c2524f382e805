"""The ASGI contenders: one Starlette app, bare or behind each context-capture middleware.

Used in-process by ``bench_asgi.py`` and served by uvicorn in ``bench_load.py``
(``uvicorn --factory apps:make_whodid`` etc., with ``benchmarks/`` on the path).
Every app answers ``GET /`` with a 2-byte plain-text body; the endpoint reads
nothing and writes nothing, so what differs is the middleware alone.
"""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route


async def hello(request: Request) -> Response:
    return PlainTextResponse("ok")


def _app(*middleware: Middleware) -> Starlette:
    return Starlette(routes=[Route("/", hello)], middleware=list(middleware))


def make_bare() -> Starlette:
    return _app()


def make_whodid() -> Starlette:
    from whodid import Actor
    from whodid.capture.asgi import AuditMiddleware

    def actor(request: Any) -> Actor | None:  # typical resolver; lazy, never called here
        user = request.scope.get("user")
        return Actor.user(user.id) if user else None

    return _app(
        Middleware(
            AuditMiddleware,
            actor=actor,
            tenant=lambda r: r.headers.get("x-org"),
            trusted_proxies=["10.0.0.0/8"],
        )
    )


def make_correlation_id() -> Starlette:
    from asgi_correlation_id import CorrelationIdMiddleware

    return _app(Middleware(CorrelationIdMiddleware))


def make_starlette_context() -> Starlette:
    # The pure-ASGI flavour (RawContextMiddleware) with the request/correlation id
    # plugins: the closest match to what whodid's middleware captures up front.
    from starlette_context import plugins
    from starlette_context.middleware import RawContextMiddleware

    return _app(
        Middleware(
            RawContextMiddleware,
            plugins=(plugins.RequestIdPlugin(), plugins.CorrelationIdPlugin()),
        )
    )


class _NoopHTTP(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: Any) -> Response:
        return await call_next(request)  # type: ignore[no-any-return]


def make_noop_base_http() -> Starlette:
    return _app(Middleware(_NoopHTTP))


class _NoopASGI:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def make_noop_asgi() -> Starlette:
    return _app(Middleware(_NoopASGI))


_ECHO = (b"x-request-id", b"0" * 32)
_PREFIX = b"0" * 20


class _EchoASGI:
    """The least a request-id middleware can do: add one fixed response header.

    No context, no id to pick or make: only the echo, built as whodid builds
    it (a plain send function, a copied start message). Its cost over bare is
    the floor for any middleware that echoes the request id.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        def send_echo(message: Any) -> Any:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), _ECHO]}
            return send(message)

        await self.app(scope, receive, send_echo)


def make_echo_floor() -> Starlette:
    return _app(Middleware(_EchoASGI))


_minimal_context: ContextVar[bytes | None] = ContextVar("minimal_context", default=None)
_minimal_ids = itertools.count()


class _MinimalContextASGI(_EchoASGI):
    """The least a request-context middleware that keeps whodid's contract can do.

    The echo floor, plus: look for the client's x-request-id (taken unchecked),
    else make one (a fixed prefix and a counter), keep it in a context variable
    for the request, and echo it. No resolvers, no validation, no guard against
    the app echoing the id itself: what any middleware capturing a request id
    into a context variable must pay. The echo is built as the echo floor's,
    inline rather than shared, so neither floor pays a call the other lacks.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value
                break
        if request_id is None:
            request_id = b"%b%012x" % (_PREFIX, next(_minimal_ids))
        echoed = (b"x-request-id", request_id)

        def send_echo(message: Any) -> Any:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), echoed]}
            return send(message)

        token = _minimal_context.set(request_id)
        try:
            await self.app(scope, receive, send_echo)
        finally:
            _minimal_context.reset(token)


def make_minimal_context() -> Starlette:
    return _app(Middleware(_MinimalContextASGI))


# name -> (label, factory, module needed or None)
CONTENDERS: dict[str, tuple[str, Callable[[], Starlette], str | None]] = {
    "bare": ("bare Starlette (baseline)", make_bare, None),
    "whodid": ("whodid AuditMiddleware", make_whodid, None),
    "correlation_id": ("asgi-correlation-id", make_correlation_id, "asgi_correlation_id"),
    "starlette_context": (
        "starlette-context (Raw + request/correlation id plugins)",
        make_starlette_context,
        "starlette_context",
    ),
    "noop_base_http": ("no-op BaseHTTPMiddleware (reference)", make_noop_base_http, None),
    "noop_asgi": ("no-op pure ASGI wrapper (reference)", make_noop_asgi, None),
    "echo_floor": (
        "floor: a fixed x-request-id echoed, nothing else (reference)",
        make_echo_floor,
        None,
    ),
    "minimal_context": (
        "floor: the echo + a request id in a context variable, nothing else (reference)",
        make_minimal_context,
        None,
    ),
}


def available(name: str) -> bool:
    module = CONTENDERS[name][2]
    return module is None or importlib.util.find_spec(module) is not None
