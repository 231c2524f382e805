"""AuditMiddleware against tiny raw ASGI apps and Starlette apps.

Raw apps show exactly which messages cross the middleware; Starlette apps
show it behaves inside a real framework (routing, streaming, thread pools).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import ipaddress
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

import whodid
from support.models import read_entries
from whodid import Actor, Auditor, ConfigurationError, audit_context, current_context
from whodid.capture.asgi import AuditMiddleware
from whodid.capture.headers import MAX_USER_AGENT
from whodid.store.writer import Change, Writer

Message = MutableMapping[str, Any]
HEX32 = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


pytestmark = pytest.mark.anyio


# -- plumbing --------------------------------------------------------------------------------


def scope_of(
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    client: tuple[str, int] | None = ("203.0.113.9", 50000),
    path: str = "/",
    kind: str = "http",
) -> dict[str, Any]:
    return {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http" if kind == "http" else "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": list(headers or []),
        "client": client,
        "server": ("testserver", 80),
    }


async def call(
    app: Callable[..., Awaitable[None]],
    scope: dict[str, Any],
    incoming: list[Message] | None = None,
) -> list[Message]:
    """Run one ASGI call; after ``incoming`` is used up, receive() blocks like a live client."""
    queue = list(incoming or [{"type": "http.request", "body": b"", "more_body": False}])
    sent: list[Message] = []

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await asyncio.Event().wait()  # a client that neither sends nor leaves
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def header_values(message: Message, name: bytes) -> list[bytes]:
    return [v for k, v in message.get("headers", ()) if k == name]


async def respond(send: Callable[[Message], Awaitable[None]], body: bytes = b"ok") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def capturing_app(seen: list[dict[str, Any]]) -> Callable[..., Awaitable[None]]:
    """A raw app that resolves every context field inside the request."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        ctx = current_context()
        assert ctx is not None
        seen.append(
            {
                "ctx": ctx,
                "request_id": ctx.request_id,
                "ip": ctx.ip,
                "user_agent": ctx.user_agent,
                "actor": ctx.actor,
                "tenant_id": ctx.tenant_id,
                "passkey": ctx.passkey,
            }
        )
        await respond(send)

    return app


async def seen_by_app(headers: list[tuple[bytes, bytes]], **mw_kwargs: Any) -> dict[str, Any]:
    client = mw_kwargs.pop("client", ("203.0.113.9", 50000))
    seen: list[dict[str, Any]] = []
    await call(AuditMiddleware(capturing_app(seen), **mw_kwargs), scope_of(headers, client=client))
    [one] = seen
    return one


# -- request ids -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rid",
    [
        "abc-123",
        "6f1c2b1e-9d2a-4f5e-8b7a-3c2d1e0f9a8b",
        "01HV6Z3K9Q7M5X2B8N4C6D0E1F",
        "Root=1-5759e988-bd862e3fe1be46a994272793",
        "a" * 128,
    ],
)
async def test_a_valid_request_id_is_kept_and_echoed_exactly_once(rid: str):
    seen: list[dict[str, Any]] = []
    sent = await call(
        AuditMiddleware(capturing_app(seen)), scope_of([(b"x-request-id", rid.encode())])
    )
    assert seen[0]["request_id"] == rid
    start = sent[0]
    assert start["type"] == "http.response.start"
    assert header_values(start, b"x-request-id") == [rid.encode()]
    assert header_values(start, b"content-type") == [b"text/plain"]  # the app's own, kept
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


@pytest.mark.parametrize(
    "raw",
    [
        b"a" * 129,
        b"a" * 10_240,
        b"has space",
        b"<script>alert(1)</script>",
        "\u00e9t\u00e9".encode(),  # UTF-8 bytes
        b"\xff\xfe\x80abc",  # not UTF-8 at all
        b"-starts-with-punctuation",
        b"abc\r\nSet-Cookie: x=1",
        b"",
    ],
    ids=["129", "10KB", "space", "script", "utf8", "binary", "punct", "crlf", "empty"],
)
async def test_an_invalid_request_id_is_replaced_by_a_fresh_one(raw: bytes):
    seen: list[dict[str, Any]] = []
    sent = await call(AuditMiddleware(capturing_app(seen)), scope_of([(b"x-request-id", raw)]))
    rid = seen[0]["request_id"]
    assert HEX32.fullmatch(rid)
    assert header_values(sent[0], b"x-request-id") == [rid.encode()]


async def test_requests_without_an_id_each_get_a_distinct_one():
    seen: list[dict[str, Any]] = []
    mw = AuditMiddleware(capturing_app(seen))
    for _ in range(50):
        await call(mw, scope_of())
    ids = {s["request_id"] for s in seen}
    assert len(ids) == 50
    assert all(HEX32.fullmatch(i) for i in ids)


async def test_custom_header_name_and_first_header_wins():
    seen: list[dict[str, Any]] = []
    mw = AuditMiddleware(capturing_app(seen), header_name="X-Correlation-ID")
    sent = await call(
        mw,
        scope_of(
            [
                (b"x-request-id", b"ignored"),
                (b"x-correlation-id", b"corr-1"),
                (b"x-correlation-id", b"corr-2"),
            ]
        ),
    )
    assert seen[0]["request_id"] == "corr-1"
    assert header_values(sent[0], b"x-correlation-id") == [b"corr-1"]
    assert header_values(sent[0], b"x-request-id") == []


async def test_echo_copes_with_any_header_container_and_does_not_mutate_the_apps_message():
    starts: list[Message] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        start: Message = {"type": "http.response.start", "status": 204}
        if scope["path"] == "/tuple":
            start["headers"] = ((b"x-app", b"1"),)
        elif scope["path"] == "/list":
            start["headers"] = [(b"x-app", b"1")]
        starts.append(start)
        await send(start)
        await send({"type": "http.response.body", "body": b""})

    mw = AuditMiddleware(app)
    for path, app_headers in (("/none", []), ("/tuple", [b"1"]), ("/list", [b"1"])):
        sent = await call(mw, scope_of([(b"x-request-id", b"r1")], path=path))
        assert header_values(sent[0], b"x-request-id") == [b"r1"]
        assert header_values(sent[0], b"x-app") == app_headers
    # The app's own dicts are as it left them: the middleware sent copies.
    assert all(header_values(s, b"x-request-id") == [] for s in starts)


async def test_starlette_response_carries_the_id_once():
    async def home(request: Request) -> PlainTextResponse:
        ctx = current_context()
        assert ctx is not None
        return PlainTextResponse(ctx.request_id or "")

    app = AuditMiddleware(Starlette(routes=[Route("/", home)]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        r = await c.get("/", headers={"X-Request-ID": "trace-42"})
        assert r.headers.get_list("x-request-id") == ["trace-42"]
        assert r.text == "trace-42"
        r = await c.get("/", headers={"X-Request-ID": "no spaces please"})
        assert r.headers.get_list("x-request-id") == [r.text]
        assert HEX32.fullmatch(r.text)


# -- client address behind proxies -----------------------------------------------------------

TRUSTED = ["10.0.0.0/8", "::1", "2001:db8:ffff::/48"]


@pytest.mark.parametrize(
    ("peer", "xff", "forwarded", "trusted", "expected"),
    [
        # no proxies configured: headers are never read
        ("203.0.113.9", "198.51.100.1", "for=198.51.100.2", None, "203.0.113.9"),
        # spoofing from a peer that is not a proxy
        ("203.0.113.9", "198.51.100.1", None, TRUSTED, "203.0.113.9"),
        ("203.0.113.9", None, "for=198.51.100.1", TRUSTED, "203.0.113.9"),
        # one trusted proxy
        ("10.0.0.1", "198.51.100.1", None, TRUSTED, "198.51.100.1"),
        ("10.0.0.1", None, None, TRUSTED, "10.0.0.1"),
        # right to left through trusted hops; what the client wrote on the left is ignored
        ("10.0.0.1", "198.51.100.1, 10.0.0.2", None, TRUSTED, "198.51.100.1"),
        ("10.0.0.1", "6.6.6.6, 198.51.100.1, 10.0.0.2", None, TRUSTED, "198.51.100.1"),
        ("10.0.0.1", "6.6.6.6,198.51.100.1,10.0.0.2,10.9.9.9", None, TRUSTED, "198.51.100.1"),
        # every hop trusted: the leftmost is as far as we can see
        ("10.0.0.1", "10.0.0.3, 10.0.0.2", None, TRUSTED, "10.0.0.3"),
        # RFC 7239 Forwarded, read when it is the configured header (see seen_ip)
        ("10.0.0.1", None, "for=198.51.100.1;proto=https;by=10.0.0.1", TRUSTED, "198.51.100.1"),
        ("10.0.0.1", None, "for=6.6.6.6, for=198.51.100.1, for=10.0.0.2", TRUSTED, "198.51.100.1"),
        # a proxy appending X-Forwarded-For passes the client's own Forwarded through
        ("10.0.0.1", "198.51.100.1", "for=6.6.6.6", TRUSTED, "198.51.100.1"),
        ("10.0.0.1", None, 'For="198.51.100.1"', TRUSTED, "198.51.100.1"),
        # IPv6: brackets, ports, quoted, IPv6 peers, IPv4-mapped peers
        ("10.0.0.1", None, 'for="[2001:db8:cafe::17]:4711"', TRUSTED, "2001:db8:cafe::17"),
        ("10.0.0.1", "[2001:db8::5]:443", None, TRUSTED, "2001:db8::5"),
        ("10.0.0.1", "2001:db8::5", None, TRUSTED, "2001:db8::5"),
        ("10.0.0.1", "198.51.100.7:51000", None, TRUSTED, "198.51.100.7"),
        ("::1", "198.51.100.1", None, TRUSTED, "198.51.100.1"),
        ("2001:db8:ffff::1", "[2001:db8::9]", None, TRUSTED, "2001:db8::9"),
        ("::ffff:10.0.0.1", "198.51.100.1", None, TRUSTED, "198.51.100.1"),
        ("::ffff:203.0.113.9", "198.51.100.1", None, TRUSTED, "203.0.113.9"),
        ("2001:db8::1", "198.51.100.1", None, TRUSTED, "2001:db8::1"),
        # garbage stops the walk at the last address that could be trusted
        ("10.0.0.1", "not-an-ip, 10.0.0.2", None, TRUSTED, "10.0.0.2"),
        ("10.0.0.1", "198.51.100.1, garbage", None, TRUSTED, "10.0.0.1"),
        ("10.0.0.1", None, 'for="_hidden", for=10.0.0.2', TRUSTED, "10.0.0.2"),
        ("10.0.0.1", None, "for=unknown", TRUSTED, "10.0.0.1"),
        ("10.0.0.1", "999.1.1.1", None, TRUSTED, "10.0.0.1"),
        # no usable peer at all (e.g. a unix socket)
        ("/run/app.sock", "198.51.100.1", None, TRUSTED, None),
    ],
)
async def test_client_ip(
    peer: str, xff: str | None, forwarded: str | None, trusted: Any, expected: str | None
):
    headers = []
    if xff is not None:
        headers.append((b"x-forwarded-for", xff.encode()))
    if forwarded is not None:
        headers.append((b"forwarded", forwarded.encode()))
    # The rows with only a Forwarded header are behind proxies configured to write it.
    header = "forwarded" if xff is None and forwarded is not None else "x-forwarded-for"
    seen = await seen_by_app(
        headers, client=(peer, 1234), trusted_proxies=trusted, proxy_header=header
    )
    assert seen["ip"] == expected


@pytest.mark.parametrize(
    ("header", "expected"), [("x-forwarded-for", "198.51.100.1"), ("Forwarded", "198.51.100.2")]
)
async def test_only_the_configured_proxy_header_is_read(header: str, expected: str):
    """nginx or an AWS ALB appends X-Forwarded-For and passes a client's Forwarded through."""
    hostile = [(b"x-forwarded-for", b"198.51.100.1"), (b"forwarded", b"for=198.51.100.2")]
    seen = await seen_by_app(
        hostile, client=("10.0.0.1", 1234), trusted_proxies=TRUSTED, proxy_header=header
    )
    assert seen["ip"] == expected


def test_an_unknown_proxy_header_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="x-forwarded-for or forwarded"):
        AuditMiddleware(capturing_app([]), trusted_proxies=TRUSTED, proxy_header="x-real-ip")


async def test_no_client_in_scope_gives_no_ip():
    seen: list[dict[str, Any]] = []
    await call(
        AuditMiddleware(capturing_app(seen), trusted_proxies=TRUSTED),
        scope_of([(b"x-forwarded-for", b"198.51.100.1")], client=None),
    )
    assert seen[0]["ip"] is None


async def test_only_the_last_32_hops_are_walked():
    hops = ["198.51.100.1"] + [f"10.0.{i}.1" for i in range(40)]
    seen = await seen_by_app(
        [(b"x-forwarded-for", ", ".join(hops).encode())],
        client=("10.0.0.1", 1),
        trusted_proxies=TRUSTED,
    )
    assert seen["ip"] == hops[-32]


GARBAGE = [
    b"",
    b",,,,",
    b"[",
    b"[::1",
    b"]]",
    b'"',
    b"for=",
    b"for",
    b";;;",
    b"for=[",
    b'for="[::1',
    b"1.2.3.4.5",
    b"::::::",
    b"%",
    b"1.2.3.4:99999:1",
    b"\x00\x01",
    b"\xff\xfe, 10.0.0.2",
    b"for=\xff\xfe",
    b"a" * 10_240,
    b"10.0.0.2, " * 2000,
    b"for=" + b"[" * 5000,
    "\u0661.\u0662.\u0663.\u0664".encode(),  # Arabic-Indic digits
]


@pytest.mark.parametrize("raw", GARBAGE)
async def test_garbage_forwarding_headers_never_raise(raw: bytes):
    for name in (b"x-forwarded-for", b"forwarded"):
        seen = await seen_by_app([(name, raw)], client=("10.0.0.1", 1), trusted_proxies=TRUSTED)
        ip = seen["ip"]
        assert ip is not None
        ipaddress.ip_address(ip)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(xff=st.binary(max_size=300), forwarded=st.binary(max_size=300), peer=st.text(max_size=60))
def test_arbitrary_forwarding_headers_yield_an_address_or_none(
    xff: bytes, forwarded: bytes, peer: str
):
    seen: list[dict[str, Any]] = []
    mw = AuditMiddleware(capturing_app(seen), trusted_proxies=["0.0.0.0/0", "::/0"])
    scope = scope_of([(b"x-forwarded-for", xff), (b"forwarded", forwarded)], client=(peer, 1))
    asyncio.run(call(mw, scope))
    ip = seen[0]["ip"]
    assert ip is None or str(ipaddress.ip_address(ip)) == ip


# -- user agent ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "check"),
    [
        (b"M" * 100_000, lambda ua: ua == "M" * MAX_USER_AGENT),
        (b"\xff" * 100_000, lambda ua: len(ua) <= MAX_USER_AGENT),
        (
            b"Mozilla/5.0 \xff\xfe\x80 (X11)",
            lambda ua: ua.startswith("Mozilla/5.0 ") and "\ufffd" in ua,
        ),
        (b"evil\r\nX-Injected: 1\x00\x1b[31m", lambda ua: not re.search(r"[\x00-\x1f]", ua)),
        (b"   ", lambda ua: ua is None),
    ],
    ids=["huge", "huge-binary", "non-utf8", "control-chars", "blank"],
)
async def test_user_agent_is_bounded_printable_text(raw: bytes, check: Callable[[Any], bool]):
    written: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        # The writer also derives "client" from the user agent: it must cope too.
        written.extend(Writer().rows([Change("thing", "touch")]))
        await respond(send)

    seen = await seen_by_app([(b"user-agent", raw)])
    assert check(seen["user_agent"])
    await call(AuditMiddleware(app), scope_of([(b"user-agent", raw)]))
    ua = written[0]["user_agent"]
    assert ua is None or len(ua) <= MAX_USER_AGENT


# -- resolvers -------------------------------------------------------------------------------


class Counting:
    def __init__(self, result: Any) -> None:
        self.result = result
        self.calls = 0
        self.requests: list[Any] = []

    def __call__(self, request: Any) -> Any:
        self.calls += 1
        self.requests.append(request)
        return self.result(request) if callable(self.result) else self.result


def resolvers() -> dict[str, Counting]:
    return {
        "actor": Counting(lambda r: Actor.user(r.headers.get("x-user", "anon"))),
        "tenant": Counting(lambda r: r.headers.get("x-tenant")),
        "passkey": Counting(True),
    }


async def test_resolvers_are_not_called_for_a_request_that_writes_nothing():
    res = resolvers()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        ctx = current_context()
        assert ctx is not None and ctx.request_id  # the id is not lazy, and is free
        await respond(send)

    mw = AuditMiddleware(app, trusted_proxies=TRUSTED, **res)
    for _ in range(5):
        await call(mw, scope_of([(b"x-user", b"usr_1"), (b"x-forwarded-for", b"1.2.3.4")]))
    assert [r.calls for r in res.values()] == [0, 0, 0]


async def test_resolvers_are_called_at_most_once_per_request_that_writes():
    res = resolvers()
    rows: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        ctx = current_context()
        assert ctx is not None
        assert ctx.actor == ctx.actor == Actor.user("usr_1")
        assert ctx.tenant_id == ctx.tenant_id == "org_1"
        assert ctx.passkey is ctx.passkey is True
        # Two flushes' worth of entries in the same request.
        rows.extend(Writer().rows([Change("a", "b")]))
        rows.extend(Writer().rows([Change("a", "c")]))
        await respond(send)

    mw = AuditMiddleware(app, **res)
    headers = [(b"x-user", b"usr_1"), (b"x-tenant", b"org_1")]
    for _ in range(3):
        await call(mw, scope_of(headers))
    assert [r.calls for r in res.values()] == [3, 3, 3]
    assert {(r["actor_id"], r["tenant_id"], r["passkey"]) for r in rows} == {
        ("usr_1", "org_1", True)
    }
    # They were given a Starlette Request over the live scope.
    assert all(isinstance(r, Request) for r in res["actor"].requests)


async def test_set_actor_in_the_app_spares_the_actor_resolver():
    res = resolvers()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        whodid.set_actor(Actor.api_key("key_1", "sk_live_ab"), passkey=False)
        ctx = current_context()
        assert ctx is not None
        assert (ctx.actor, ctx.passkey, ctx.tenant_id) == (
            Actor.api_key("key_1", "sk_live_ab"),
            False,
            "org_9",
        )
        await respond(send)

    await call(AuditMiddleware(app, **res), scope_of([(b"x-tenant", b"org_9")]))
    assert [r.calls for r in res.values()] == [0, 1, 0]


@pytest.fixture
def file_auditor(tmp_path: Path) -> Iterator[Auditor]:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/audit.db")
    auditor = Auditor(engine)
    auditor.create_all()
    yield auditor
    engine.dispose()


async def test_resolvers_are_called_once_even_with_several_recorded_events(file_auditor: Auditor):
    res = resolvers()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        file_auditor.record("auth.signin.failed")
        file_auditor.record("export.created")
        # An override builds a nested context; the rest still comes from the request's.
        file_auditor.record("key.rotated", actor=Actor.system("rotator"))
        ctx = current_context()
        assert ctx is not None and ctx.actor is not None
        await respond(send)

    headers = [(b"x-user", b"usr_1"), (b"x-tenant", b"org_1")]
    await call(AuditMiddleware(app, **res), scope_of(headers))
    assert file_auditor.engine is not None
    found = [(e.actor_id, e.tenant_id, e.passkey) for e in read_entries(file_auditor.engine)]
    assert found == [("usr_1", "org_1", True), ("usr_1", "org_1", True), ("rotator", "org_1", True)]
    assert [r.calls for r in res.values()] == [1, 1, 1]


async def a_resolver(request: Any) -> Actor:
    return Actor.user("x")


class AsyncCallable:
    async def __call__(self, request: Any) -> Actor:
        return Actor.user("x")


@pytest.mark.parametrize("kind", ["actor", "tenant", "passkey"])
@pytest.mark.parametrize(
    "bad",
    [a_resolver, AsyncCallable(), functools.partial(a_resolver), "usr_1", 42],
    ids=["async-def", "async-callable", "async-partial", "string", "int"],
)
def test_unusable_resolvers_fail_at_construction(kind: str, bad: Any):
    with pytest.raises(ConfigurationError, match=f"{kind}="):
        AuditMiddleware(capturing_app([]), **{kind: bad})


@pytest.mark.parametrize(
    "bad", ["banana", ["10.0.0.0/8", "banana"], "10.0.0.0/33", "", ["::1", "1.2.3.4/abc"]]
)
def test_bad_trusted_proxies_fail_at_construction(bad: Any):
    with pytest.raises(ConfigurationError, match="trusted_proxies entry"):
        AuditMiddleware(capturing_app([]), trusted_proxies=bad)


def test_sync_resolvers_and_good_proxies_are_accepted():
    class Resolver:
        def __call__(self, request: Any) -> None:
            return None

    AuditMiddleware(
        capturing_app([]),
        actor=Resolver(),
        tenant=lambda r: None,
        passkey=functools.partial(bool),
        trusted_proxies=["10.0.0.0/8", " 192.168.1.1 ", "::1", "2001:db8::/32", "10.1.2.3/8"],
    )


async def test_starlette_surfaces_a_bad_resolver_at_startup():
    app = Starlette()
    app.add_middleware(AuditMiddleware, actor=a_resolver)
    with pytest.raises(ConfigurationError):
        await call(
            app, {"type": "lifespan", "asgi": {"version": "3.0"}}, [{"type": "lifespan.startup"}]
        )


# -- what passes through ---------------------------------------------------------------------


async def test_lifespan_messages_pass_through_untouched():
    received: list[Message] = []
    contexts: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        contexts.append(current_context())
        while True:
            message = await receive()
            received.append(message)
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    startup, shutdown = {"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    sent = await call(AuditMiddleware(app, actor=lambda r: None), scope, [startup, shutdown])
    assert received[0] is startup and received[1] is shutdown
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert contexts == [None]


async def test_a_starlette_lifespan_runs_through_the_middleware():
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    app = Starlette(lifespan=lifespan)
    app.add_middleware(AuditMiddleware)
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    sent = await call(app, scope, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    assert events == ["startup", "shutdown"]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def streaming_app(seen_ids: list[str | None]) -> Starlette:
    async def chunks() -> Any:
        for word in (b"one", b"two", b"three", b"four"):
            ctx = current_context()
            seen_ids.append(ctx.request_id if ctx else None)
            await asyncio.sleep(0)
            yield word

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks(), media_type="text/plain")

    return Starlette(routes=[Route("/stream", stream)])


async def test_streaming_responses_pass_through_chunk_by_chunk():
    seen_ids: list[str | None] = []
    mw = AuditMiddleware(streaming_app(seen_ids))
    sent = await call(mw, scope_of([(b"x-request-id", b"stream-1")], path="/stream"))
    start, *bodies = sent
    assert header_values(start, b"x-request-id") == [b"stream-1"]
    assert [m["body"] for m in bodies if m["body"]] == [b"one", b"two", b"three", b"four"]
    assert all(m.get("more_body") for m in bodies[:-1])
    assert not bodies[-1].get("more_body")
    # The generator runs inside the request's context.
    assert seen_ids == ["stream-1"] * 4
    assert current_context() is None


async def test_streaming_over_http():
    transport = httpx.ASGITransport(AuditMiddleware(streaming_app([])))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        async with c.stream("GET", "/stream", headers={"X-Request-ID": "s-2"}) as r:
            body = b"".join([chunk async for chunk in r.aiter_raw()])
        assert r.headers.get_list("x-request-id") == ["s-2"]
        assert body == b"onetwothreefour"


async def test_a_websocket_gets_a_context():
    res = resolvers()
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        ctx = current_context()
        assert ctx is not None
        seen.append(
            {
                "rid": ctx.request_id,
                "ip": ctx.ip,
                "ua": ctx.user_agent,
                "actor": ctx.actor,
                "tenant": ctx.tenant_id,
            }
        )
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": ctx.request_id})
        await send({"type": "websocket.close", "code": 1000})

    scope = scope_of(
        [
            (b"x-request-id", b"ws-1"),
            (b"user-agent", b"ws-client/1"),
            (b"x-user", b"usr_ws"),
            (b"x-tenant", b"org_ws"),
            (b"x-forwarded-for", b"198.51.100.4"),
        ],
        client=("10.0.0.1", 1),
        kind="websocket",
    )
    mw = AuditMiddleware(app, trusted_proxies=TRUSTED, **res)
    sent = await call(mw, scope, [{"type": "websocket.connect"}])
    assert seen == [
        {
            "rid": "ws-1",
            "ip": "198.51.100.4",
            "ua": "ws-client/1",
            "actor": Actor.user("usr_ws"),
            "tenant": "org_ws",
        }
    ]
    # Websocket messages are not touched (there is no response header to echo into).
    assert sent == [
        {"type": "websocket.accept"},
        {"type": "websocket.send", "text": "ws-1"},
        {"type": "websocket.close", "code": 1000},
    ]
    [conn] = res["actor"].requests
    assert isinstance(conn, HTTPConnection) and not isinstance(conn, Request)
    assert current_context() is None


async def test_a_starlette_websocket_endpoint_sees_the_context():
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        ctx = current_context()
        await websocket.send_text(ctx.request_id if ctx else "none")
        await websocket.close()

    mw = AuditMiddleware(Starlette(routes=[WebSocketRoute("/ws", ws)]))
    sent = await call(
        mw,
        scope_of([(b"x-request-id", b"ws-2")], path="/ws", kind="websocket"),
        [{"type": "websocket.connect"}],
    )
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "ws-2"


async def test_other_scope_types_are_passed_through_without_a_context():
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["type"], current_context()))

    await AuditMiddleware(app)({"type": "custom.thing"}, None, None)  # type: ignore[arg-type]
    assert seen == [("custom.thing", None)]


async def test_it_is_pure_asgi_not_base_http_middleware():
    assert not issubclass(AuditMiddleware, BaseHTTPMiddleware)
    assert inspect.iscoroutinefunction(AuditMiddleware.__call__)
    # So the endpoint runs in the very task that entered the middleware (under
    # BaseHTTPMiddleware it would run in another task, with a copied context).
    tasks: list[Any] = []

    async def home(request: Request) -> PlainTextResponse:
        tasks.append(asyncio.current_task())
        return PlainTextResponse("ok")

    await call(AuditMiddleware(Starlette(routes=[Route("/", home)])), scope_of())
    assert tasks == [asyncio.current_task()]


# -- context lifetime ------------------------------------------------------------------------


async def test_the_context_is_reset_after_the_request():
    seen: list[dict[str, Any]] = []
    assert current_context() is None
    await call(AuditMiddleware(capturing_app(seen)), scope_of())
    assert current_context() is None
    # An enclosing context (a job driving the app in-process) comes back, unchanged.
    with audit_context(actor=Actor.system("job")) as outer:
        await call(AuditMiddleware(capturing_app(seen)), scope_of())
        assert current_context() is outer
        assert outer.actor == Actor.system("job")
    assert seen[1]["ctx"] is not outer


@pytest.mark.parametrize("when", ["before-start", "after-start", "mid-stream"])
async def test_an_exception_from_the_app_propagates_and_the_context_is_reset(when: str):
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert current_context() is not None
        if when != "before-start":
            await send({"type": "http.response.start", "status": 200, "headers": []})
        if when == "mid-stream":
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await call(AuditMiddleware(app), scope_of())
    assert current_context() is None


async def test_a_starlette_endpoint_exception_propagates_and_the_context_is_reset():
    async def home(request: Request) -> PlainTextResponse:
        raise LookupError("nope")

    app = AuditMiddleware(Starlette(routes=[Route("/", home)]))
    with pytest.raises(LookupError):
        await call(app, scope_of())
    assert current_context() is None


async def test_200_interleaved_requests_never_see_each_others_actor():
    async def via_set_actor(request: Request) -> JSONResponse:
        whodid.set_actor(Actor.user(request.headers["x-user"]))
        for _ in range(3):
            await asyncio.sleep(0)  # let every other request run in between
        return report()

    def sync_set_actor(request: Request) -> JSONResponse:
        # Starlette runs sync endpoints in a worker thread with a copied context.
        whodid.set_actor(Actor.api_key(request.headers["x-user"]))
        return report()

    async def via_resolver(request: Request) -> JSONResponse:
        await asyncio.sleep(0)
        ctx = current_context()
        assert ctx is not None
        assert ctx.actor is not None  # resolve now, then yield
        await asyncio.sleep(0)
        return report()

    def report() -> JSONResponse:
        ctx = current_context()
        assert ctx is not None and ctx.actor is not None
        return JSONResponse({"actor": ctx.actor.id, "type": ctx.actor.type, "rid": ctx.request_id})

    routes = [Route("/a", via_set_actor), Route("/s", sync_set_actor), Route("/r", via_resolver)]
    app = AuditMiddleware(
        Starlette(routes=routes), actor=lambda r: Actor.user("resolved:" + r.headers["x-user"])
    )
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

        async def one(i: int) -> tuple[int, dict[str, Any], str]:
            path = ("/a", "/s", "/r")[i % 3]
            r = await client.get(path, headers={"X-User": f"u{i}", "X-Request-ID": f"req-{i}"})
            assert r.status_code == 200, r.text
            return i, r.json(), r.headers["x-request-id"]

        results = await asyncio.gather(*(one(i) for i in range(200)))

    for i, body, echoed in results:
        expected = {0: ("user", f"u{i}"), 1: ("api_key", f"u{i}"), 2: ("user", f"resolved:u{i}")}
        assert (body["type"], body["actor"]) == expected[i % 3]
        assert body["rid"] == echoed == f"req-{i}"
    assert current_context() is None
