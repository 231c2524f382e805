"""Attribution and isolation no one can choose: a row's tenant, a viewer's tenant,
and the tenant every reading method is told, never assumed."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from starlette.testclient import TestClient

from support.entries import put
from whodid import ALL_TENANTS, Actor, Auditor, InvalidQuery, audit_context
from whodid.cli import main
from whodid.errors import CrossTenantWrite
from whodid.web import Viewer, audit_app


class Base(DeclarativeBase):
    pass


class Invoice(Base):
    __tablename__ = "invoices"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    org_id: Mapped[str] = mapped_column(sa.String(20))
    amount: Mapped[int]


def audited(url: str, **options: object) -> tuple[Auditor, sessionmaker]:
    engine = sa.create_engine(url)
    Base.metadata.create_all(engine)
    auditor = Auditor(engine, **options)  # type: ignore[arg-type]
    auditor.create_all()
    auditor.track(Invoice, tenant="org_id")
    return auditor, auditor.instrument(sessionmaker(engine))


def test_a_change_to_another_tenants_row_is_filed_under_that_tenant(db_url):
    auditor, Session = audited(db_url)
    with Session.begin() as s:
        s.add(Invoice(id=1, org_id="org_b", amount=10))
    ada = Actor.user("usr_ada", label="ada@a.example")
    with audit_context(actor=ada, tenant_id="org_a"), Session.begin() as s:
        s.get(Invoice, 1).amount = 0
    b_log = auditor.list(tenant_id="org_b").entries
    assert [e.action for e in b_log] == ["invoices.update", "invoices.create"]
    update = b_log[0]
    assert update.actor_id == "usr_ada"
    assert update.metadata == {"acting_tenant_id": "org_a"}
    assert auditor.list(tenant_id="org_a").entries == []  # org_a's admins never see org_b's row
    # Within its own tenant, nothing is added.
    with audit_context(actor=ada, tenant_id="org_b"), Session.begin() as s:
        s.get(Invoice, 1).amount = 5
    assert auditor.list(tenant_id="org_b").entries[0].metadata == {}


def test_cross_tenant_writes_can_be_refused(db_url):
    auditor, Session = audited(db_url, cross_tenant="refuse")
    with Session.begin() as s:
        s.add(Invoice(id=1, org_id="org_b", amount=10))
    with (
        pytest.raises(CrossTenantWrite, match="tenant 'org_b' was made in tenant 'org_a'"),
        audit_context(tenant_id="org_a"),
        Session.begin() as s,
    ):
        s.get(Invoice, 1).amount = 0
    with Session() as s:
        assert s.get(Invoice, 1).amount == 10  # refused means not written at all
    assert auditor.count(tenant_id=ALL_TENANTS) == 1
    with pytest.raises(Exception, match="cross_tenant must be"):
        Auditor(cross_tenant="maybe")


# -- the reader's tenant --------------------------------------------------------------


@pytest.mark.parametrize(
    "viewer",
    [
        Viewer(tenant_id=None, role="owner"),
        {"role": "owner"},
        {"role": "admin", "tenant_id": ""},
    ],
    ids=["None", "missing", "empty"],
)
def test_a_viewer_without_a_tenant_is_refused(engine, viewer):
    auditor = Auditor(engine)
    auditor.create_all()
    put(auditor, tenant=None)  # tenantless entries: what such a viewer would have read
    client = TestClient(audit_app(auditor, authorize=lambda r: viewer))
    for path in ("/audit-logs", "/audit-logs/export.csv", "/audit-logs/actions"):
        got = client.get(path)
        assert got.status_code == 403, path
        assert "names no tenant" in got.json()["error"]["message"]


def test_a_single_tenant_app_says_all_tenants(engine):
    auditor = Auditor(engine)
    auditor.create_all()
    put(auditor, tenant=None)
    put(auditor, tenant="org_1")
    viewer = Viewer(tenant_id=ALL_TENANTS, role="owner")
    client = TestClient(audit_app(auditor, authorize=lambda r: viewer))
    assert len(client.get("/audit-logs").json()["data"]) == 2
    client.get("/audit-logs/export.csv")
    export = auditor.list(tenant_id=None, action="audit_log.export").entries
    assert len(export) == 2  # started and completed, filed as tenantless


READERS = [
    ("list", lambda a: a.list()),
    ("count", lambda a: a.count()),
    ("get", lambda a: a.get("log_01HZX3V9K8M2N4P6Q8R0S2T4V6")),
    ("related", lambda a: a.related("log_01HZX3V9K8M2N4P6Q8R0S2T4V6")),
    ("export", lambda a: a.export(__import__("io").StringIO())),
    ("actions", lambda a: a.actions()),
    ("tenants", lambda a: a.tenants()),
    ("purge", lambda a: a.purge(__import__("datetime").datetime(2000, 1, 1))),
]


@pytest.mark.parametrize(("name", "call"), READERS, ids=[n for n, _ in READERS])
def test_every_reading_method_needs_an_explicit_tenant(sqlite_url, name, call):
    auditor = Auditor(sqlite_url)
    auditor.create_all()
    with pytest.raises(InvalidQuery, match=rf"^{name}\(\) needs tenant_id="):
        call(auditor)


@pytest.mark.parametrize("command", [["list"], ["export", "-o", "-"], ["show", "log_x"]])
def test_every_cli_reading_command_needs_tenant_or_all_tenants(sqlite_url, command):
    Auditor(sqlite_url).create_all()
    result = CliRunner().invoke(main, [*command, "--db", sqlite_url])
    assert result.exit_code == 2
    assert "--tenant TENANT, or --all-tenants" in result.output
    both = [*command, "--db", sqlite_url, "--tenant", "t", "--all-tenants"]
    assert CliRunner().invoke(main, both).exit_code == 2
