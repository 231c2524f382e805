"""WSGI middleware (Flask, Django-on-WSGI, any WSGI app): the same capture as ASGI.

Resolvers receive the WSGI ``environ``; inside Flask they may also use
``flask.g`` or ``flask_login.current_user``, since they run during the request,
when the first entry is written.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from whodid.capture.headers import (
    REQUEST_ID_HEADER,
    ProxyResolver,
    forwarding_chain,
    header_text,
    new_request_id,
    valid_request_id,
)
from whodid.capture.resolvers import Resolvers, ResolverSource
from whodid.context import CURRENT, Actor
from whodid.store.enrich import Enricher
from whodid.store.traces import tag_request

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
else:
    StartResponse = WSGIApplication = WSGIEnvironment = Any

Environ = dict[str, Any]


class WSGIAuditMiddleware:
    """Capture actor, tenant, passkey, client IP, user agent and request id (WSGI)."""

    def __init__(
        self,
        app: WSGIApplication,
        *,
        actor: Callable[[Environ], Actor | None] | None = None,
        tenant: Callable[[Environ], str | None] | None = None,
        passkey: Callable[[Environ], bool | None] | None = None,
        trusted_proxies: Iterable[str] | str | None = None,
        proxy_header: str = "x-forwarded-for",
        geoip_db: str | os.PathLike[str] | None = None,
        header_name: str = REQUEST_ID_HEADER,
    ) -> None:
        self.app = app
        self.resolvers = Resolvers(actor, tenant, passkey)
        self.proxies = ProxyResolver.of(trusted_proxies, proxy_header)
        self._proxy_key = "HTTP_" + self.proxies.header.upper().replace("-", "_")
        self.enricher = Enricher(geoip_db) if geoip_db is not None else None
        self.header_name = header_name
        self.environ_key = "HTTP_" + header_name.upper().replace("-", "_")

    def source_for(self, environ: Environ) -> _EnvironSource:
        return _EnvironSource(self, environ)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        raw = environ.get(self.environ_key)
        request_id = valid_request_id(raw) if isinstance(raw, str) else None
        if request_id is None:
            request_id = new_request_id()
        environ["whodid.request_id"] = request_id
        if "opentelemetry.trace" in sys.modules:  # the app traces: tag its span
            tag_request(request_id)
        token = CURRENT.set([self, environ, request_id, None])  # see context.CURRENT

        wanted = self.header_name.lower()

        def start_with_request_id(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            # The app may have set the id itself; never send two.
            if not any(name.lower() == wanted for name, _ in headers):
                headers.append((self.header_name, request_id))
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, start_with_request_id)
        except BaseException:
            CURRENT.reset(token)
            raise
        # The body may be a generator that still writes while the server
        # iterates it, so the context lives until the server closes it.
        return _ClosingBody(body, lambda: CURRENT.reset(token))


class _ClosingBody:
    def __init__(self, body: Iterable[bytes], done: Callable[[], None]) -> None:
        self.body = body
        self.done: Callable[[], None] | None = done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            done, self.done = self.done, None  # servers may close twice
            # Reset from another thread/context than the one that set it raises
            # ValueError: that context is gone anyway, nothing to undo.
            if done is not None:
                with contextlib.suppress(ValueError):
                    done()


class _EnvironSource(ResolverSource):
    """Reads the lazy context fields of one WSGI request from its environ."""

    __slots__ = ("environ", "mw")
    mw: WSGIAuditMiddleware

    def __init__(self, mw: WSGIAuditMiddleware, environ: Environ) -> None:
        self.mw = mw
        self.environ = environ

    def request(self) -> Environ:
        return self.environ

    def ip(self) -> str | None:
        chain = None
        if self.mw.proxies.trusted:
            chain = forwarding_chain(_wsgi_str(self.environ.get(self.mw._proxy_key)))
        return self.mw.proxies.client_ip(self.environ.get("REMOTE_ADDR"), chain)

    def user_agent(self) -> str | None:
        return header_text(_wsgi_str(self.environ.get("HTTP_USER_AGENT")))


def _wsgi_str(value: object) -> bytes | None:
    # PEP 3333 hands headers over as latin-1 decoded str; undo that so UTF-8
    # user agents come out right, and anything else is replaced, not raised.
    if isinstance(value, str):
        return value.encode("latin-1", "replace")
    return None
