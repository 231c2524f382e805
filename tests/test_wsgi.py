"""WSGIAuditMiddleware around bare WSGI callables: request ids, client IPs, headers, lifetimes.

The apps here are plain PEP 3333 callables and the "server" is a few lines that
call them, iterate the body and close it, the way wsgiref or gunicorn do.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa

import whodid
from whodid import Actor, Auditor, ConfigurationError, audit_context, current_context
from whodid.capture.wsgi import WSGIAuditMiddleware
from whodid.store.schema import entries

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]
App = Callable[[Environ, StartResponse], Iterable[bytes]]

HEX32 = re.compile(r"[0-9a-f]{32}")


def environ(**extra: Any) -> Environ:
    """A minimal PEP 3333 environ; header values are str, latin-1 decoded."""
    env: Environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "192.0.2.10",
        "wsgi.url_scheme": "http",
    }
    env.update(extra)
    return env


def latin1(raw: bytes) -> str:
    """How a WSGI server hands over header bytes (PEP 3333 "native strings")."""
    return raw.decode("latin-1")


@dataclass
class Response:
    status: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def serve(app: App, env: Environ) -> Response:
    """Call ``app`` like a WSGI server: start_response, iterate the body, close it."""
    started: dict[str, Any] = {}

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        started["status"], started["headers"] = status, headers
        return lambda data: None

    body = app(env, start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return Response(started["status"], started["headers"], data)


@dataclass
class Seen:
    """What an app saw of the audit context while it ran."""

    request_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    actor: Actor | None = None


def capturing_app(seen: list[Seen]) -> App:
    def app(env: Environ, start_response: StartResponse) -> Iterable[bytes]:
        ctx = current_context()
        assert ctx is not None
        seen.append(Seen(ctx.request_id, ctx.ip, ctx.user_agent, ctx.actor))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return app


def see(env: Environ, **options: Any) -> tuple[Seen, Response]:
    seen: list[Seen] = []
    response = serve(WSGIAuditMiddleware(capturing_app(seen), **options), env)
    assert current_context() is None, "the context outlived the request"
    return seen[0], response


# -- request ids ------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_id",
    [
        "abc123",
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        "01HZX3K5Q8Y7V6T5R4E3W2Q1A0",
        "Root=1-67891233-abcdef012345678912345678",
        "svc:api/req.42+retry=1",
        "a" * 128,
    ],
)
def test_valid_request_id_is_kept_and_echoed(request_id: str) -> None:
    env = environ(HTTP_X_REQUEST_ID=request_id)
    seen, response = see(env)
    assert seen.request_id == request_id
    assert response.header("X-Request-ID") == [request_id]
    assert env["whodid.request_id"] == request_id


@pytest.mark.parametrize(
    "bad",
    [
        "a" * 10 * 1024,
        "a" * 129,
        "has spaces in it",
        "<script>alert(1)</script>",
        latin1("caf\u00e9-\u2603".encode()),  # non-ASCII, as a server passes it on
        "caf\u00e9",
        "abc\r\nSet-Cookie: session=stolen",  # header injection
        "abc\x00def",
        "-starts-with-punctuation",
        "' OR 1=1 --",
        "",
    ],
    ids=[
        "10kb",
        "129-chars",
        "spaces",
        "script",
        "utf8-bytes",
        "latin1",
        "crlf",
        "nul",
        "leading-dash",
        "sql",
        "empty",
    ],
)
def test_invalid_request_id_is_replaced_and_echoed(bad: str) -> None:
    env = environ(HTTP_X_REQUEST_ID=bad)
    seen, response = see(env)
    assert seen.request_id is not None
    assert HEX32.fullmatch(seen.request_id)
    assert response.header("X-Request-ID") == [seen.request_id]
    assert env["whodid.request_id"] == seen.request_id


def test_missing_request_id_is_generated_fresh_each_time() -> None:
    ids = set()
    for _ in range(50):
        seen, response = see(environ())
        assert seen.request_id is not None
        assert HEX32.fullmatch(seen.request_id)
        assert response.header("X-Request-ID") == [seen.request_id]
        ids.add(seen.request_id)
    assert len(ids) == 50


def test_custom_request_id_header() -> None:
    seen, response = see(
        environ(HTTP_X_CORRELATION_ID="corr-7", HTTP_X_REQUEST_ID="ignored"),
        header_name="X-Correlation-ID",
    )
    assert seen.request_id == "corr-7"
    assert response.header("X-Correlation-ID") == ["corr-7"]
    assert response.header("X-Request-ID") == []


def test_app_headers_and_body_pass_through() -> None:
    def app(env: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("201 Created", [("Content-Type", "application/json"), ("X-App", "1")])
        return [b"{", b"}"]

    response = serve(WSGIAuditMiddleware(app), environ())
    assert response.status == "201 Created"
    assert response.header("X-App") == ["1"]
    assert response.header("Content-Type") == ["application/json"]
    assert response.body == b"{}"


# -- client IP ------------------------------------------------------------------------


@pytest.mark.parametrize("trusted", [None, ["10.0.0.0/8"]], ids=["no-proxies", "other-proxies"])
def test_forwarding_headers_from_untrusted_peer_are_ignored(trusted: list[str] | None) -> None:
    # A client talking to us directly can send any header it likes.
    seen, _ = see(
        environ(
            REMOTE_ADDR="198.51.100.23",
            HTTP_X_FORWARDED_FOR="203.0.113.9",
            HTTP_FORWARDED="for=203.0.113.9",
        ),
        trusted_proxies=trusted,
    )
    assert seen.ip == "198.51.100.23"


@pytest.mark.parametrize(
    ("xff", "expected"),
    [
        ("203.0.113.9, 10.0.0.7", "203.0.113.9"),
        ("203.0.113.9", "203.0.113.9"),
        # The left part is whatever the client sent; only the hop our own
        # proxies appended counts.
        ("6.6.6.6, 203.0.113.9, 10.0.0.7", "203.0.113.9"),
        ("203.0.113.9:51234, 10.0.0.7", "203.0.113.9"),
        ("2001:db8::5, 10.0.0.7", "2001:db8::5"),
        ("[2001:db8::5]:443", "2001:db8::5"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        # Every hop is a trusted proxy: the leftmost is as far as we can see.
        ("10.1.1.1, 10.0.0.7", "10.1.1.1"),
    ],
)
def test_x_forwarded_for_is_walked_right_to_left(xff: str, expected: str) -> None:
    seen, _ = see(
        environ(REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR=xff), trusted_proxies=["10.0.0.0/8"]
    )
    assert seen.ip == expected


FORWARDED = 'for=198.51.100.2;proto=https, for="[2001:db8::1]:4711"'


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [
        (["10.0.0.0/8"], "2001:db8::1"),
        (["10.0.0.0/8", "2001:db8::/32"], "198.51.100.2"),
    ],
)
def test_forwarded_header(trusted: list[str], expected: str) -> None:
    seen, _ = see(
        environ(
            REMOTE_ADDR="10.0.0.5",
            HTTP_FORWARDED=FORWARDED,
            HTTP_X_FORWARDED_FOR="6.6.6.6",  # not the configured header: never read
        ),
        trusted_proxies=trusted,
        proxy_header="forwarded",
    )
    assert seen.ip == expected


def test_forwarded_header_is_case_insensitive_and_skips_other_params() -> None:
    seen, _ = see(
        environ(REMOTE_ADDR="10.0.0.5", HTTP_FORWARDED="proto=https;By=10.0.0.5;For=203.0.113.4"),
        trusted_proxies="10.0.0.0/8",
        proxy_header="forwarded",
    )
    assert seen.ip == "203.0.113.4"


def test_a_client_sent_forwarded_is_ignored_behind_an_x_forwarded_for_proxy() -> None:
    seen, _ = see(
        environ(
            REMOTE_ADDR="10.0.0.5",
            HTTP_FORWARDED="for=6.6.6.6",  # the client's, passed through by nginx
            HTTP_X_FORWARDED_FOR="198.51.100.9",
        ),
        trusted_proxies="10.0.0.0/8",
    )
    assert seen.ip == "198.51.100.9"


@pytest.mark.parametrize(
    "xff",
    [
        "garbage",
        "unknown",
        "",
        " ",
        ",,,",
        "999.1.1.1",
        "203.0.113.9, not-an-ip",
        "203.0.113.9,",
        "[::1",
        "[]",
        "1.2.3.4:80:90",
        "\x00\x01\x7f",
        latin1(b"\xff\xfe\xc3\x28"),
        "_hidden, _obfuscated",
        '"',
        "a" * 100_000,
        ", ".join(["10.0.0.1"] * 5_000),
        "10.0.0.7;" * 1000,
    ],
)
def test_garbage_x_forwarded_for_falls_back_to_a_trusted_address(xff: str) -> None:
    seen, _ = see(
        environ(REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR=xff), trusted_proxies=["10.0.0.0/8"]
    )
    assert seen.ip is not None
    # Never an address the client made up: the peer, or a hop of our own proxies.
    assert ipaddress.ip_address(seen.ip) in ipaddress.ip_network("10.0.0.0/8")


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("198.51.100.23", "198.51.100.23"),
        ("2001:db8::7", "2001:db8::7"),
        ("::ffff:198.51.100.23", "198.51.100.23"),
        ("", None),
        ("unix:/run/app.sock", None),
        ("not an address", None),
        (None, None),
    ],
)
def test_peer_address(peer: str | None, expected: str | None) -> None:
    env = environ()
    if peer is None:
        del env["REMOTE_ADDR"]
    else:
        env["REMOTE_ADDR"] = peer
    seen, _ = see(env, trusted_proxies=["10.0.0.0/8"])
    assert seen.ip == expected


# A proxy appends the real client to whatever X-Forwarded-For the client sent.
# Cutting the header to its first 4096 characters keeps the client's part and
# drops the proxy's, so a long enough header lets the client pick its address.
def test_long_x_forwarded_for_cannot_spoof_the_client() -> None:
    client_part = "," * (4096 - len("6.6.6.6")) + "6.6.6.6"
    seen, _ = see(
        environ(REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR=f"{client_part}, 203.0.113.9"),
        trusted_proxies=["10.0.0.0/8"],
    )
    assert seen.ip == "203.0.113.9"


# -- user agent ---------------------------------------------------------------------


def test_user_agent_is_bounded() -> None:
    seen, _ = see(environ(HTTP_USER_AGENT="Mozilla/5.0 " + "A" * 5000))
    assert seen.user_agent is not None
    assert len(seen.user_agent) == 1024
    assert seen.user_agent.startswith("Mozilla/5.0 AAA")


def test_utf8_user_agent_is_decoded() -> None:
    ua = "Mozilla/5.0 (Ωmega; café) Gecko"
    seen, _ = see(environ(HTTP_USER_AGENT=latin1(ua.encode())))
    assert seen.user_agent == ua


@pytest.mark.parametrize(
    "raw",
    [b"Mozilla \xff\xfe\xfd", b"\xc3\x28 broken", b"\xe2\x82", b"x" + b"\xe9" * 5000],
)
def test_non_utf8_user_agent_does_not_raise(raw: bytes) -> None:
    seen, _ = see(environ(HTTP_USER_AGENT=latin1(raw)))
    assert seen.user_agent is not None
    assert "\ufffd" in seen.user_agent
    assert len(seen.user_agent) <= 1024


def test_control_characters_are_stripped_from_user_agent() -> None:
    seen, _ = see(environ(HTTP_USER_AGENT="curl/8.0\x1b[31m\r\nX-Evil: 1\x00"))
    assert seen.user_agent == "curl/8.0[31mX-Evil: 1"


@pytest.mark.parametrize("ua", [None, "", "   ", "\x00\x01"])
def test_missing_or_empty_user_agent_is_none(ua: str | None) -> None:
    env = environ() if ua is None else environ(HTTP_USER_AGENT=ua)
    seen, _ = see(env)
    assert seen.user_agent is None


def test_hostile_request_still_writes_its_entry(engine: sa.Engine) -> None:
    """All of the above at once, through a real write (PostgreSQL enforces the column sizes)."""
    auditor = Auditor(engine)
    auditor.create_all()

    def app(env: Environ, start_response: StartResponse) -> Iterable[bytes]:
        auditor.record("test.hostile", entity=("thing", 1))
        start_response("204 No Content", [])
        return []

    mw = WSGIAuditMiddleware(
        app,
        actor=lambda env: Actor.user("u" * 1000, label=latin1("é".encode()) * 500),
        trusted_proxies=["10.0.0.0/8"],
    )
    response = serve(
        mw,
        environ(
            REMOTE_ADDR="10.0.0.5",
            HTTP_X_REQUEST_ID="<script>" * 100,
            HTTP_USER_AGENT=latin1(b"\xff" * 3000 + "Ω".encode() * 3000),
            HTTP_X_FORWARDED_FOR="nonsense, 203.0.113.9, ::ffff:10.0.0.9",
        ),
    )
    with engine.connect() as conn:
        row = conn.execute(sa.select(entries)).mappings().one()
    assert row["request_id"] == response.header("X-Request-ID")[0]
    assert HEX32.fullmatch(row["request_id"])
    assert row["ip"] == "203.0.113.9"
    assert len(row["user_agent"]) <= 1024
    assert row["actor_type"] == "user"
    assert len(row["actor_id"]) <= 400


# -- configuration ---------------------------------------------------------------------


async def _async_resolver(env: Environ) -> Actor | None:
    return None


class _AsyncCallable:
    async def __call__(self, env: Environ) -> Actor | None:
        return None


def _app(env: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [])
    return []


@pytest.mark.parametrize("name", ["actor", "tenant", "passkey"])
@pytest.mark.parametrize("resolver", [_async_resolver, _AsyncCallable()], ids=["func", "object"])
def test_async_resolver_is_rejected_at_construction(name: str, resolver: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        WSGIAuditMiddleware(_app, **{name: resolver})
    message = str(info.value)
    assert f"{name}=" in message
    assert "async" in message
    assert "sync" in message  # says what to pass instead


@pytest.mark.parametrize("name", ["actor", "tenant", "passkey"])
@pytest.mark.parametrize("value", ["user", 42, Actor.user("u1")])
def test_non_callable_resolver_is_rejected(name: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=f"{name}= must be a callable"):
        WSGIAuditMiddleware(_app, **{name: value})


def test_configuration_error_is_a_whodid_error() -> None:
    with pytest.raises(whodid.WhodidError):
        WSGIAuditMiddleware(_app, actor="nope")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad", ["not-a-network", "10.0.0.0/33", "", "10.0.0.0.1", "localhost", "::g"]
)
def test_bad_trusted_proxy_entry_is_named(bad: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        WSGIAuditMiddleware(_app, trusted_proxies=["10.0.0.0/8", bad, "::1"])
    assert repr(bad) in str(info.value)
    assert "trusted_proxies" in str(info.value)


def test_trusted_proxies_accepts_a_single_string_and_addresses() -> None:
    seen, _ = see(
        environ(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9"),
        trusted_proxies="127.0.0.1",
    )
    assert seen.ip == "203.0.113.9"
    seen, _ = see(
        environ(REMOTE_ADDR="::1", HTTP_X_FORWARDED_FOR="203.0.113.9"),
        trusted_proxies=[" ::1 ", "10.0.0.1"],
    )
    assert seen.ip == "203.0.113.9"


# -- laziness -------------------------------------------------------------------------------


@dataclass
class Counting:
    calls: dict[str, int] = field(default_factory=lambda: {"actor": 0, "tenant": 0, "passkey": 0})

    def actor(self, env: Environ) -> Actor:
        self.calls["actor"] += 1
        return Actor.api_key("key_1", label="sk_live_abcd")

    def tenant(self, env: Environ) -> str:
        self.calls["tenant"] += 1
        return "org_1"

    def passkey(self, env: Environ) -> bool:
        self.calls["passkey"] += 1
        return True

    def middleware(self, app: App) -> WSGIAuditMiddleware:
        return WSGIAuditMiddleware(app, actor=self.actor, tenant=self.tenant, passkey=self.passkey)


def test_resolvers_are_not_called_when_nothing_is_written() -> None:
    counting = Counting()

    def app(env: Environ, start_response: StartResponse) -> Iterable[bytes]:
        assert current_context() is not None
        start_response("200 OK", [])
        yield b"nothing audited here"

    mw = counting.middleware(app)
    for _ in range(3):
        serve(mw, environ())
    assert counting.calls == {"actor": 0, "tenant": 0, "passkey": 0}


def _recording_app(auditor: Auditor, *actions: str) -> App:
    def app(env: Environ, start_response: StartResponse) -> Iterable[bytes]:
        for action in actions:
            auditor.record(action)
        start_response("200 OK", [])
        return [b"done"]

    return app


def test_resolvers_are_called_for_a_request_that_writes(sqlite_url: str) -> None:
    auditor = Auditor(sqlite_url)
    auditor.create_all()
    counting = Counting()

    mw = counting.middleware(_recording_app(auditor, "export.started"))
    response = serve(mw, environ(HTTP_X_REQUEST_ID="req-1"))
    assert counting.calls == {"actor": 1, "tenant": 1, "passkey": 1}
    assert response.header("X-Request-ID") == ["req-1"]

    assert auditor.engine is not None
    with auditor.engine.connect() as conn:
        row = conn.execute(sa.select(entries)).mappings().one()
    assert row["action"] == "export.started"
    assert (row["actor_type"], row["actor_id"], row["actor_label"]) == (
        "api_key",
        "key_1",
        "sk_live_abcd",
    )
    assert row["tenant_id"] == "org_1"
    assert row["passkey"] is True
    assert row["request_id"] == "req-1"
    assert row["ip"] == "192.0.2.10"
    auditor.engine.dispose()


def test_resolvers_are_called_once_per_request_however_many_entries(sqlite_url: str) -> None:
    auditor = Auditor(sqlite_url)
    auditor.create_all()
    counting = Counting()
    mw = counting.middleware(_recording_app(auditor, "export.started", "export.finished"))
    try:
        serve(mw, environ())
    finally:
        assert auditor.engine is not None
        auditor.engine.dispose()
    assert counting.calls == {"actor": 1, "tenant": 1, "passkey": 1}


# -- lifetime of the context ------------------------------------------------------------------


def test_context_lives_while_a_streaming_body_is_iterated() -> None:
    during: list[str | None] = []
    in_finally: list[str | None] = []

    def app(env: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            for i in range(3):
                ctx = current_context()
                during.append(ctx.request_id if ctx else None)
                yield f"chunk {i}\n".encode()
        finally:
            # Cleanup code of a streaming body may still write audit entries.
            ctx = current_context()
            in_finally.append(ctx.request_id if ctx else None)

    mw = WSGIAuditMiddleware(app)
    started: list[Any] = []
    body = mw(environ(HTTP_X_REQUEST_ID="stream-1"), lambda *a: started.append(a))
    # Nothing of the generator has run yet, but the context is already there.
    assert current_context() is not None
    assert started == []
    chunks = iter(body)
    assert next(chunks) == b"chunk 0\n"
    assert started[0][1][-1] == ("X-Request-ID", "stream-1")
    assert next(chunks) == b"chunk 1\n"
    assert current_context() is not None
    body.close()  # type: ignore[attr-defined]  # the client went away mid-stream
    assert during == ["stream-1", "stream-1"]
    assert in_finally == ["stream-1"]
    assert current_context() is None


def test_close_of_the_apps_body_is_called() -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"x"

        def close(self) -> None:
            closed.append(current_context() is not None)

    def app(env: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        return Body()

    serve(WSGIAuditMiddleware(app), environ())
    assert closed == [True]  # once, with the context still in place
    assert current_context() is None


def test_context_is_restored_to_the_enclosing_one() -> None:
    with audit_context(actor=Actor.system("outer"), request_id="outer-1") as outer:
        body = WSGIAuditMiddleware(_app)(environ(), lambda *a: None)
        assert current_context() is not outer
        list(body)
        body.close()  # type: ignore[attr-defined]
        assert current_context() is outer
    assert current_context() is None


def test_exception_from_the_app_propagates_and_resets_the_context() -> None:
    def app(env: Environ, start_response: StartResponse) -> Iterable[bytes]:
        assert current_context() is not None
        raise RuntimeError("boom")

    mw = WSGIAuditMiddleware(app)
    with pytest.raises(RuntimeError, match="boom"):
        mw(environ(), lambda *a: None)
    assert current_context() is None

    with audit_context(request_id="outer") as outer:
        with pytest.raises(RuntimeError, match="boom"):
            mw(environ(), lambda *a: None)
        assert current_context() is outer


def test_exception_while_streaming_propagates_and_close_resets() -> None:
    def app(env: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"first"
        raise ValueError("broken stream")

    with pytest.raises(ValueError, match="broken stream"):
        serve(WSGIAuditMiddleware(app), environ())
    assert current_context() is None


def test_base_exceptions_reset_the_context_too() -> None:
    def app(env: Environ, start_response: StartResponse) -> Iterable[bytes]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        WSGIAuditMiddleware(app)(environ(), lambda *a: None)
    assert current_context() is None


def test_closing_the_body_twice_is_harmless() -> None:
    body = WSGIAuditMiddleware(_app)(environ(), lambda *a: None)
    body.close()  # type: ignore[attr-defined]
    body.close()  # type: ignore[attr-defined]
    assert current_context() is None


# -- concurrency ------------------------------------------------------------------------------


def test_concurrent_requests_each_see_their_own_context() -> None:
    n = 20
    barrier = threading.Barrier(n, timeout=10)
    results: dict[int, list[tuple[str | None, str | None, Actor | None]]] = {}
    errors: list[BaseException] = []

    def snapshot() -> tuple[str | None, str | None, Actor | None]:
        ctx = current_context()
        assert ctx is not None
        return ctx.request_id, ctx.ip, ctx.actor

    def app(env: Environ, start_response: StartResponse) -> Iterator[bytes]:
        i = env["test.index"]
        seen = results.setdefault(i, [])
        seen.append(snapshot())
        # Every request is now inside the app at once: the contexts interleave.
        barrier.wait()
        seen.append(snapshot())
        start_response("200 OK", [])
        yield b"a"
        barrier.wait()  # and again while the bodies are being streamed
        seen.append(snapshot())
        yield b"b"

    mw = WSGIAuditMiddleware(
        app,
        actor=lambda env: Actor.user(f"usr_{env['test.index']}"),
        trusted_proxies=["10.0.0.0/8"],
    )

    def worker(i: int) -> None:
        try:
            env = environ(
                REMOTE_ADDR=f"10.0.0.{i + 1}",
                HTTP_X_FORWARDED_FOR=f"203.0.113.{i + 1}",
                HTTP_X_REQUEST_ID=f"req-{i}",
                **{"test.index": i},
            )
            response = serve(mw, env)
            assert response.body == b"ab"
            assert response.header("X-Request-ID") == [f"req-{i}"]
            assert current_context() is None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    for i in range(n):
        expected = (f"req-{i}", f"203.0.113.{i + 1}", Actor.user(f"usr_{i}"))
        assert results[i] == [expected] * 3
    assert current_context() is None
