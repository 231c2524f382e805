"""OpenTelemetry: entries carry the active trace and span; the request's span, its request id."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from support.entries import put
from whodid import ALL_TENANTS, Auditor
from whodid.asgi import AuditMiddleware
from whodid.wsgi import WSGIAuditMiddleware


def tracing() -> tuple[Any, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("whodid-tests"), exporter


def test_an_entry_written_in_a_span_carries_its_trace_and_span(engine):
    auditor = Auditor(engine)
    auditor.create_all()
    tracer, exporter = tracing()
    with tracer.start_as_current_span("refund") as span:
        put(auditor, metadata={"amount": "10.00"})
    put(auditor, entity=("customer", "cus_2"))  # no span: nothing added
    traced, plain = sorted(
        auditor.list(tenant_id=ALL_TENANTS).entries, key=lambda e: e.entity_id or ""
    )
    context = span.get_span_context()
    assert traced.metadata == {
        "amount": "10.00",
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
    }
    assert plain.metadata == {}
    assert auditor.list(tenant_id=ALL_TENANTS, q=f"{context.trace_id:032x}").entries == [traced]
    assert [s.name for s in exporter.get_finished_spans()] == ["refund"]


def test_the_request_span_carries_the_request_id():
    tracer, exporter = tracing()

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hi")

    inner = AuditMiddleware(Starlette(routes=[Route("/", hello)]))

    async def traced(scope: Any, receive: Any, send: Any) -> None:
        # What OpenTelemetry's ASGI middleware does around the app: a span per request.
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        with tracer.start_as_current_span("GET /"):
            await inner(scope, receive, send)

    response = TestClient(traced).get("/", headers={"x-request-id": "req-traced-1"})
    assert response.headers["x-request-id"] == "req-traced-1"
    (span,) = exporter.get_finished_spans()
    assert span.attributes["whodid.request_id"] == "req-traced-1"


def test_a_wsgi_request_span_carries_the_request_id():
    tracer, exporter = tracing()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hi"]

    audited = WSGIAuditMiddleware(app)
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "REMOTE_ADDR": "203.0.113.9",
        "HTTP_X_REQUEST_ID": "req-wsgi-1",
        "wsgi.input": None,
    }
    with tracer.start_as_current_span("GET /"):
        body = audited(environ, lambda status, headers, exc_info=None: None)
        b"".join(body)
        if hasattr(body, "close"):
            body.close()
    (span,) = exporter.get_finished_spans()
    assert span.attributes["whodid.request_id"] == "req-wsgi-1"
