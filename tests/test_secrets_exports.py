"""Secrets never stored in clear, CSV that cannot run formulas, exports that are recorded."""

from __future__ import annotations

import csv
import io
import re
import threading
import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from starlette.testclient import TestClient

from support.entries import put
from support.pgserver import free_port
from whodid import ALL_TENANTS, Actor, Auditor
from whodid.entry.values import REDACTED, REDACTED_CHANGED
from whodid.export.formats import lines, write
from whodid.store import query as q
from whodid.store.drivers.sqlite import sqlite_csv
from whodid.web import Viewer, audit_app


class Base(DeclarativeBase):
    pass


class ApiToken(Base):
    __tablename__ = "api_tokens"
    token: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    apiKey: Mapped[str | None] = mapped_column(sa.String(64))
    cardNumber: Mapped[str | None] = mapped_column(sa.String(64))
    label: Mapped[str | None] = mapped_column(sa.String(64))
    settings: Mapped[Any] = mapped_column(sa.JSON, nullable=True)


@pytest.fixture
def tokens(db_url: str) -> tuple[Auditor, Any]:
    engine = sa.create_engine(db_url)
    Base.metadata.create_all(engine)
    auditor = Auditor(engine)
    auditor.create_all()
    auditor.track(ApiToken)
    return auditor, auditor.instrument(sessionmaker(engine))


def stored_text(auditor: Auditor) -> str:
    """Everything the log holds, as text: a secret must not appear anywhere in it."""
    out = io.StringIO()
    with auditor.engine.connect() as conn:  # type: ignore[union-attr]
        write(out, q.iter_export_rows(conn, q.Filters.build()), "ndjson")
    return out.getvalue()


SECRET = "sk_live_51HxSuperSecretValue"


def test_secrets_as_ids_in_json_and_in_camel_case_are_never_stored(tokens):
    auditor, Session = tokens
    settings = {"webhook": {"signingSecret": SECRET, "url": "https://x"}, "items": [{"pin": 1}]}
    with Session.begin() as s:
        s.add(
            ApiToken(
                token=SECRET,
                apiKey=SECRET,
                cardNumber="4111111111111111",
                label="ci",
                settings=settings,
            )
        )
    with Session.begin() as s:
        s.get(ApiToken, SECRET).label = "ci-2"
    auditor.record("api_key.rotate", metadata={"oldApiKey": SECRET, "deep": {"client_secret": 1}})
    text = stored_text(auditor)
    assert SECRET not in text and "4111111111111111" not in text
    update, create = auditor.list(tenant_id=None, feature="api_tokens").entries
    assert create.entity_id == update.entity_id  # a stable pseudonym: the history links up
    assert re.fullmatch(r"redacted:[0-9a-f]{24}", create.entity_id or "")
    assert create.after["apiKey"] == create.after["cardNumber"] == REDACTED
    assert create.after["settings"]["webhook"] == {"signingSecret": REDACTED, "url": "https://x"}
    assert create.after["token"] == REDACTED
    (rotate,) = auditor.list(tenant_id=None, action="api_key.rotate").entries
    assert rotate.metadata == {"oldApiKey": REDACTED, "deep": {"client_secret": REDACTED}}


def test_a_changed_secret_shows_as_changed_without_its_value(tokens):
    auditor, Session = tokens
    with Session.begin() as s:
        s.add(ApiToken(token="t1", apiKey="old", settings={"hook": {"secret": "a", "on": True}}))
    with Session.begin() as s:
        s.get(ApiToken, "t1").apiKey = "new"
    with Session.begin() as s:
        s.get(ApiToken, "t1").settings = {"hook": {"secret": "b", "on": True}}
    nested, top, _ = auditor.list(tenant_id=None).entries
    assert (top.before, top.after) == ({"apiKey": REDACTED}, {"apiKey": REDACTED_CHANGED})
    assert nested.before == {"settings": {"hook": {"secret": REDACTED}}}
    assert nested.after == {"settings": {"hook": {"secret": REDACTED_CHANGED}}}


# -- CSV -------------------------------------------------------------------------------

HOSTILE = [
    "Bob\r=cmd|' /C calc'!A0",
    "Eve\n+1+1",
    "x\r\n@SUM(1)",
    "tab\r\t-2",
    "=plain formula",
    "fine\rtext",
]


def assert_no_formula_line(data: str) -> None:
    """Split as a careless spreadsheet would, at every CR and LF: no piece is a formula."""
    for piece in re.split(r"[\r\n]", data):
        for cell in piece.split(","):
            assert not re.match(r'^"?[=+\-@\t]', cell), repr(piece)


def put_hostile(auditor: Auditor) -> None:
    for i, label in enumerate(HOSTILE):
        put(auditor, actor=Actor.user(f"usr_{i}", label), entity=("customer", label))


def test_every_csv_path_quotes_line_breaks_and_guards_each_line(engine):
    auditor = Auditor(engine)
    auditor.create_all()
    put_hostile(auditor)
    with engine.connect() as conn:
        python = io.StringIO()
        write(python, q.iter_export_rows(conn, q.Filters.build()), "csv")
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            out = io.StringIO()
            assert sqlite_csv(conn, q.export_where(conn, q.Filters.build()), out, lines) is not None
            assert out.getvalue() == python.getvalue()
    fast = io.StringIO()
    auditor.export(fast, "csv", tenant_id=ALL_TENANTS)  # COPY or SQLite's SQL
    assert fast.getvalue() == python.getvalue()
    data = python.getvalue()
    assert_no_formula_line(data)
    rows = list(csv.DictReader(io.StringIO(data, newline="")))
    assert [r["actor_label"] for r in rows] == [
        "Bob\r'=cmd|' /C calc'!A0",
        "Eve\n'+1+1",
        "x\r\n'@SUM(1)",
        "tab\r'\t-2",
        "'=plain formula",
        "fine\rtext",
    ]
    http = TestClient(audit_app(auditor, authorize=lambda r: Viewer(ALL_TENANTS, "owner")))
    body = http.get("/audit-logs/export.csv").text
    assert body.split("\n", 1)[1].startswith(data.split("\n", 1)[1][:50])
    assert_no_formula_line(body)


# -- exports are recorded from their start ---------------------------------------------


def export_entries(auditor: Auditor) -> list[dict[str, Any]]:
    found = auditor.list(tenant_id=ALL_TENANTS, action="audit_log.export").entries
    return [e.metadata for e in reversed(found)]


def test_an_export_closed_early_is_recorded_as_abandoned(engine):
    auditor = Auditor(engine)
    auditor.create_all()
    for i in range(30):
        put(auditor, entity=("customer", f"cus_{i}"))
    chunks = auditor.iter_export("ndjson", tenant_id="org_1", lines_per_chunk=10)
    assert [m["status"] for m in export_entries(auditor)] == ["started"]
    assert next(chunks).count("\n") == 10
    chunks.close()
    started, ended = export_entries(auditor)
    assert (ended["status"], ended["rows"]) == ("abandoned", 10)
    assert ended["chain_id"] == started["chain_id"]
    whole = "".join(auditor.iter_export("ndjson", tenant_id="org_1"))
    assert whole.count("\n") == 32  # the 30, and the first export's two entries
    assert export_entries(auditor)[-1]["status"] == "completed"


def test_an_http_client_that_hangs_up_is_recorded(engine):
    auditor = Auditor(engine)
    auditor.create_all()
    for i in range(3000):  # many chunks: the client leaves long before the end
        put(auditor, entity=("customer", f"cus_{i}"), user_agent="x" * 300)
    app = audit_app(auditor, authorize=lambda r: Viewer("org_1", "owner"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        with httpx.stream("GET", f"http://127.0.0.1:{port}/audit-logs/export.csv") as r:
            assert r.status_code == 200
            next(r.iter_bytes())  # one chunk, then hang up
        deadline = time.monotonic() + 20
        while len(export_entries(auditor)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        started, ended = export_entries(auditor)
        assert started["status"] == "started"
        assert ended["status"] == "abandoned" and 0 < ended["rows"] < 3000
    finally:
        server.should_exit = True
        thread.join(10)
