"""Pure ASGI middleware that puts each request's audit context in place.

Per request it only picks (or makes) a request id, installs a lazy
:class:`~whodid.context.RequestContext` and echoes the id on the response.
Resolvers, proxy walking and header decoding run only if the request writes
an audit entry.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from starlette.requests import HTTPConnection, Request

from whodid.capture.headers import (
    REQUEST_ID_HEADER,
    ProxyResolver,
    forwarding_chain,
    header_text,
    new_request_id_bytes,
    valid_request_id_bytes,
)
from whodid.capture.resolvers import Resolvers, ResolverSource
from whodid.context import CURRENT, Actor
from whodid.store.enrich import Enricher
from whodid.store.traces import tag_request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ActorResolver = Callable[[HTTPConnection], Actor | None]
TenantResolver = Callable[[HTTPConnection], str | None]
PasskeyResolver = Callable[[HTTPConnection], bool | None]


class AuditMiddleware:
    """Capture actor, tenant, passkey, client IP, user agent and request id.

    ``trusted_proxies`` lists the proxies' addresses or networks, and
    ``proxy_header`` names the one forwarding header they write
    (``"x-forwarded-for"``, the default, or ``"forwarded"``); the other is
    never read.

    ``actor``, ``tenant`` and ``passkey`` are sync callables taking the
    Starlette request (an ``HTTPConnection`` for websockets) and returning an
    :class:`~whodid.Actor`, a tenant id and a bool, or None. They are called at
    most once per request, when its first entry is written.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        actor: ActorResolver | None = None,
        tenant: TenantResolver | None = None,
        passkey: PasskeyResolver | None = None,
        trusted_proxies: Iterable[str] | str | None = None,
        proxy_header: str = "x-forwarded-for",
        geoip_db: str | os.PathLike[str] | None = None,
        header_name: str = REQUEST_ID_HEADER,
    ) -> None:
        self.app = app
        self.resolvers = Resolvers(actor, tenant, passkey)
        self.proxies = ProxyResolver.of(trusted_proxies, proxy_header)
        self._proxy_header = self.proxies.header.encode("latin-1")
        self.enricher = Enricher(geoip_db) if geoip_db is not None else None
        self.header_name = header_name.lower().encode("latin-1")

    def source_for(self, scope: Scope) -> _ScopeSource:
        return _ScopeSource(self, scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return

        # The id stays bytes, as the header carries it; the context decodes
        # it only if the request writes an entry.
        request_id = None
        wanted = self.header_name
        for name, value in scope["headers"]:
            if name == wanted:
                request_id = valid_request_id_bytes(value)
                break
        if request_id is None:
            request_id = new_request_id_bytes()
        if "opentelemetry.trace" in sys.modules:  # the app traces: tag its span
            tag_request(request_id.decode("ascii"))

        token = CURRENT.set([self, scope, request_id, None])  # see context.CURRENT
        try:
            if kind == "websocket":
                await self.app(scope, receive, send)
                return
            echoed = (wanted, request_id)

            # A plain function handing back send's awaitable: no coroutine of
            # its own per message, which is most of a wrapper's cost.
            def send_with_request_id(message: Message) -> Awaitable[None]:
                if message["type"] == "http.response.start":
                    headers = message.get("headers", ())
                    # The app may have set the id itself; never send two. ASGI
                    # header names are lower-case, so no case folding needed.
                    for name, _ in headers:
                        if name == wanted:
                            break
                    else:
                        # A copy: the app's message (and its header list, which a
                        # module-level Response shares) must not keep this id.
                        message = {**message, "headers": [*headers, echoed]}
                return send(message)

            await self.app(scope, receive, send_with_request_id)
        finally:
            CURRENT.reset(token)


class _ScopeSource(ResolverSource):
    """Reads the lazy context fields of one ASGI request from its scope."""

    __slots__ = ("_connection", "mw", "scope")
    mw: AuditMiddleware

    def __init__(self, mw: AuditMiddleware, scope: Scope) -> None:
        self.mw = mw
        self.scope = scope
        self._connection: HTTPConnection | None = None

    def request(self) -> HTTPConnection:
        if self._connection is None:
            cls = Request if self.scope["type"] == "http" else HTTPConnection
            self._connection = cls(self.scope)
        return self._connection

    def _header(self, wanted: bytes) -> bytes | None:
        # A header sent on several lines counts as one comma-joined list (RFC 9110).
        values = [value for name, value in self.scope["headers"] if name == wanted]
        return b", ".join(values) if values else None

    def ip(self) -> str | None:
        client = self.scope.get("client")
        peer = client[0] if client else None
        chain = None
        if self.mw.proxies.trusted:
            chain = forwarding_chain(self._header(self.mw._proxy_header))
        return self.mw.proxies.client_ip(peer, chain)

    def user_agent(self) -> str | None:
        return header_text(self._header(b"user-agent"))
