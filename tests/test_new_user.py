"""What a new user trips on first: importing, end dates, a missing log, q, parameters."""

from __future__ import annotations

import csv
import datetime as dt
import pkgutil
import subprocess
import sys

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from starlette.testclient import TestClient

import whodid
from support.entries import ADA, put
from whodid import ALL_TENANTS, Auditor, InvalidQuery
from whodid.cli import main
from whodid.context import RequestContext
from whodid.store.query import Filters
from whodid.store.writer import Change
from whodid.web import Viewer, audit_app

# What `import whodid` must not load: each is needed only by a feature used later
# (parsing a user agent, a GeoIP lookup, signing, PostgreSQL, async sessions, pages).
DEFERRED = (
    "user_agents",
    "ua_parser",
    "geoip2",
    "maxminddb",
    "cryptography",
    "greenlet",
    "sqlalchemy.ext.asyncio",
    "sqlalchemy.dialects.postgresql",
    "psycopg",
    "deepdiff",
    "jinja2",
    "click",
    "starlette.applications",
    "subprocess",
    # whodid's own reading, export, retention and integrity: loaded on first use
    "whodid.store.query",
    "whodid.store.search",
    "whodid.export.formats",
    "whodid.integrity.retention",
    "whodid.store.partitions",
    "whodid.integrity.verify",
    "whodid.integrity.checkpoints",
    "whodid.integrity.keys",
    "whodid.stream",
    "whodid.web",
    "whodid.cli",
)


def _loaded_by(code: str) -> set[str]:
    """Modules that ``code`` imports in a fresh interpreter, read from -X importtime."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def test_import_whodid_loads_only_what_capture_needs():
    floor = _loaded_by("import sqlalchemy.orm, starlette.requests")
    loaded = _loaded_by("import whodid") - floor
    assert {m for m in loaded if m.split(".")[0] == "whodid"} >= {
        "whodid.capture.orm",
        "whodid.store.writer",
    }
    early = sorted(m for m in loaded if any(m == d or m.startswith(d + ".") for d in DEFERRED))
    assert early == []


# Modules that need an extra (tested where the extra is installed).
NEEDS_EXTRA = {"whodid.celery", "whodid.mcp_server"}


def _public_modules() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.walk_packages(whodid.__path__, "whodid.")
        if not m.name.rsplit(".", 1)[1].startswith("_") and m.name not in NEEDS_EXTRA
    )


def test_every_module_imports_and_audits_without_greenlet(tmp_path):
    """SQLAlchemy 2.1 no longer installs greenlet: whodid must not need it to import or write."""
    modules = _public_modules()
    assert "whodid.capture.asgi" in modules and "whodid.cli" in modules
    code = f"""
import sys
sys.modules["greenlet"] = None  # what `import greenlet` finds when it is not installed
import importlib
for name in {modules!r}:
    importlib.import_module(name)
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from whodid import Auditor
engine = sa.create_engine("sqlite:///{tmp_path}/app.db")
auditor = Auditor(engine)
auditor.create_all()
class Base(DeclarativeBase): pass
@auditor.track
class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
Base.metadata.create_all(engine)
Session = auditor.instrument(sessionmaker(engine))
with Session.begin() as s:
    s.add(Item(id=1))
print(auditor.list(action="items.create", tenant_id=None).entries[0].entity_id)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


# -- a date alone as the end includes that day -----------------------------------


def _at(auditor: Auditor, when: dt.datetime, action: str) -> None:
    put(auditor, action=action, at=when)


@pytest.fixture
def quarter(engine: sa.Engine) -> Auditor:
    auditor = Auditor(engine)
    auditor.create_all()
    _at(auditor, dt.datetime(2026, 1, 1, 0, 0, tzinfo=dt.UTC), "q1.first")
    _at(auditor, dt.datetime(2026, 3, 31, 23, 59, 59, 999999, tzinfo=dt.UTC), "q1.last")
    _at(auditor, dt.datetime(2026, 4, 1, 0, 0, tzinfo=dt.UTC), "q2.first")
    return auditor


def test_a_date_only_end_includes_that_day_in_python(quarter):
    for end in ("2026-03-31", dt.date(2026, 3, 31)):
        page = quarter.list(start="2026-01-01", end=end, tenant_id=ALL_TENANTS)
        assert sorted(e.action for e in page.entries) == ["q1.first", "q1.last"]
        assert quarter.count(start="2026-01-01", end=end, tenant_id=ALL_TENANTS) == 2
    # A time is taken as given: the end instant itself is included, nothing after it.
    page = quarter.list(start="2026-01-01", end="2026-03-31T00:00:00Z", tenant_id=ALL_TENANTS)
    assert [e.action for e in page.entries] == ["q1.first"]
    # A whole year by dates is one list query (366 days at most).
    assert quarter.count(start="2026-01-01", end="2026-12-31", tenant_id=ALL_TENANTS) == 3
    quarter.list(start="2025-01-01", end="2025-12-31", tenant_id=ALL_TENANTS)


def test_a_date_only_end_includes_that_day_in_the_cli_and_http(quarter, db_url, tmp_path):
    out = tmp_path / "q1.csv"
    q1 = ["--since", "2026-01-01", "--until", "2026-03-31"]
    args = ["export", "--db", db_url, "--all-tenants", *q1, "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    with out.open(newline="") as f:
        assert sorted(r["action"] for r in csv.DictReader(f)) == ["q1.first", "q1.last"]

    app = audit_app(quarter, authorize=lambda r: Viewer(tenant_id="org_1", role="owner"))
    with TestClient(app) as client:
        got = client.get("/audit-logs?start_date=2026-01-01&end_date=2026-03-31")
        assert sorted(e["action"] for e in got.json()["data"]) == ["q1.first", "q1.last"]
        got = client.get("/audit-logs/export.ndjson?start_date=2026-01-01&end_date=2026-03-31")
        assert got.text.count("\n") == 2


# -- the CLI against a database that is not an audit log -------------------------

ENTRY_ID = "log_01HZX3V9K8M2N4P6Q8R0S2T4V6"
READ_COMMANDS = [
    ["list", "--all-tenants"],
    ["show", ENTRY_ID, "--all-tenants"],
    ["export", "--all-tenants", "-o", "out.csv"],
    ["verify", "--public-key", "k.pub"],
    ["seal", "--key", "k.pem"],
    ["index"],
    ["purge", "--older-than", "400d", "--yes", "--all-tenants"],
]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: c[0])
def test_every_command_refuses_a_missing_database_and_creates_nothing(
    command, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the relative path of a new user's first try
    result = CliRunner().invoke(main, [*command, "--db", "sqlite:///audit.db"])
    assert result.exit_code == 1, result.output
    assert "no audit log at sqlite:///audit.db" in result.output
    assert "does not exist" in result.output and "whodid init" in result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: c[0])
def test_every_command_refuses_a_database_without_the_log(
    command, empty_db_url, tmp_path, monkeypatch
):
    db_url = empty_db_url
    with sa.create_engine(db_url).begin() as conn:
        conn.exec_driver_sql("CREATE TABLE app (id INTEGER)")
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    result = CliRunner().invoke(main, [*command, "--db", db_url])
    assert result.exit_code == 1, result.output
    assert "no audit log in" in result.output and "whodid_entries" in result.output
    assert list(here.iterdir()) == []
    assert not sa.inspect(sa.create_engine(db_url)).has_table("whodid_entries")


def test_the_cli_names_a_url_it_cannot_read():
    result = CliRunner().invoke(main, ["list", "--db", "not a url"])
    assert result.exit_code == 1
    assert "is not a database URL" in result.output


# -- q searches the changed values ------------------------------------------------


def test_q_finds_before_and_after_values(engine):
    auditor = Auditor(engine)
    auditor.create_all()
    change = Change(
        feature="customer",
        operation="update",
        action="customer.update",
        entity_type="customer",
        entity_id="cus_1",
        before={"email": "old-Address@example.com", "profile": {"city": "Zürich"}},
        after={"email": "new-address@example.com", "profile": {"city": "Berlin"}},
    )
    rows = auditor.writer.rows([change], RequestContext(actor=ADA, tenant_id="org_1"))
    with engine.begin() as conn:
        auditor.writer.write(conn, rows)
    put(auditor, action="customer.create", entity=("customer", "cus_2"))
    for q in ("old-address@", "NEW-ADDRESS", "Zürich", "berlin"):
        found = auditor.list(q=q, tenant_id=ALL_TENANTS).entries
        assert [e.entity_id for e in found] == ["cus_1"], q
    auditor.index_search()  # PostgreSQL: the same answer from the search table
    for q in ("old-address@", "NEW-ADDRESS", "Zürich", "berlin"):
        found = auditor.list(q=q, tenant_id=ALL_TENANTS).entries
        assert [e.entity_id for e in found] == ["cus_1"], q


@pytest.mark.postgres
def test_create_all_reindexes_a_log_indexed_without_the_values(pg_url):
    auditor = Auditor(pg_url)
    auditor.create_all()
    auditor.record("payment.refund", after={"reason": "duplicate-charge"})
    auditor.index_search()
    assert auditor.engine is not None
    with auditor.engine.begin() as conn:
        # What an older whodid left: text without the values, under no version.
        conn.exec_driver_sql("UPDATE whodid_search SET text = 'payment.refund'")
        conn.exec_driver_sql("COMMENT ON TABLE whodid_search IS NULL")
    assert auditor.list(q="duplicate-charge", tenant_id=ALL_TENANTS).entries == []
    auditor.create_all()
    assert len(auditor.list(q="duplicate-charge", tenant_id=ALL_TENANTS).entries) == 1
    auditor.index_search()
    assert len(auditor.list(q="duplicate-charge", tenant_id=ALL_TENANTS).entries) == 1


# -- parameters are checked alike, in the caller's words ---------------------------


@pytest.fixture
def client(engine: sa.Engine) -> TestClient:
    auditor = Auditor(engine)
    auditor.create_all()
    put(auditor, ip="2001:db8::1")
    put(auditor, ip="203.0.113.9")
    app = audit_app(auditor, authorize=lambda r: Viewer(tenant_id="org_1", role="owner"))
    return TestClient(app)


@pytest.mark.parametrize(
    "query",
    ["limit=5&limit=10", "cursor=a&cursor=b", "actor_type=user&actor_type=system", "q=a&q=b"],
)
def test_a_repeated_parameter_is_refused(client, query):
    for path in ("/audit-logs", "/audit-logs/export.csv"):
        if path.endswith("csv") and query.startswith(("limit", "cursor")):
            continue
        got = client.get(f"{path}?{query}")
        assert got.status_code == 400, (path, query)
        name = query.partition("=")[0]
        assert got.json()["error"]["message"] == f"{name} was given 2 times; give it once"


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("start_date=yesterday", "start_date 'yesterday' is not an ISO 8601"),
        ("end_date=2026-13-01", "end_date '2026-13-01' is not an ISO 8601"),
        ("start_date=2026-03-02&end_date=2026-03-01", "(end_date 2026-03-01T23:59:59"),
        ("start_date=2020-01-01&end_date=2026-01-01", "narrow start_date/end_date"),
        ("ip=not-an-ip", "ip 'not-an-ip' is not an IP address"),
    ],
)
def test_errors_name_the_parameter_as_given(client, query, named):
    got = client.get(f"/audit-logs?{query}")
    assert got.status_code == 400
    assert named in got.json()["error"]["message"]


def test_ip_filter_matches_the_stored_form(client):
    for ip in ("2001:DB8:0::1", "::ffff:203.0.113.9"):
        got = client.get("/audit-logs", params={"ip": ip})
        assert got.status_code == 200
        assert len(got.json()["data"]) == 1, ip


def test_the_cli_names_its_own_options(tmp_path):
    url = f"sqlite:///{tmp_path}/a.db"
    Auditor(url).create_all()
    result = CliRunner().invoke(main, ["list", "--db", url, "--all-tenants", "--until", "soon"])
    assert result.exit_code == 1
    assert "--until 'soon' is not an ISO 8601" in result.output
    result = CliRunner().invoke(main, ["list", "--db", url, "--all-tenants", "--ip", "x"])
    assert "--ip 'x' is not an IP address" in result.output


def test_python_errors_name_the_keyword():
    with pytest.raises(InvalidQuery, match=r"^end 'nope' is not"):
        Filters.build(end="nope")
    with pytest.raises(InvalidQuery, match=r"^ip '1\.2\.3' is not an IP address"):
        Filters.build(ip="1.2.3")


@pytest.mark.parametrize(
    "path", ["/audit-logs/actions", "/audit-logs/log_01HZX3V9K8M2N4P6Q8R0S2T4V6"]
)
def test_endpoints_without_parameters_refuse_them(client, path):
    got = client.get(path, params={"tenant_id": "org_2"})
    assert got.status_code == 400
    assert got.json()["error"]["message"] == "unknown parameter tenant_id; this endpoint takes none"
