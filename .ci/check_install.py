"""What a user gets from `pip install whodid` with no extras, checked in its own venv.

Run by .ci/install-check with the fresh venv's python, from an empty directory:
  python check_install.py bare   every module imports; an ORM change is audited,
                                  listed, exported, sealed and verified on SQLite
  python check_install.py demo URL
                                  the demo at URL answers its pages and API
"""

import importlib
import io
import json
import pkgutil
import sys
import time
import urllib.request

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from whodid import ALL_TENANTS

# Modules that need an extra, and the extra.
OPTIONAL = {"whodid.celery": "celery", "whodid.mcp_server": "mcp"}


def bare() -> None:
    import whodid

    names = sorted(m.name for m in pkgutil.walk_packages(whodid.__path__, "whodid."))
    for name in names:
        if name in OPTIONAL:  # needs its extra: it must say which
            try:
                importlib.import_module(name)
            except ImportError as exc:
                assert f"whodid[{OPTIONAL[name]}]" in str(exc), exc
            continue
        importlib.import_module(name)
    print(f"imported {len(names)} modules")

    from whodid import Actor, Auditor, audit_context
    from whodid.integrity.keys import generate_key_pair

    private, public = generate_key_pair("audit.pem")
    engine = sa.create_engine("sqlite:///bare.db")
    auditor = Auditor(engine, signing_key=private)
    auditor.create_all()

    class Base(DeclarativeBase):
        pass

    @auditor.track(feature="customer")
    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str]

    Base.metadata.create_all(engine)
    Session = auditor.instrument(sessionmaker(engine))
    ada = Actor.user("usr_1", label="ada@example.com")
    with audit_context(actor=ada, tenant_id="org_1"), Session.begin() as session:
        session.add(Customer(id=1, email="ada@example.com"))
    page = auditor.list(action="customer.create", tenant_id=ALL_TENANTS)
    assert [e.actor_label for e in page.entries] == ["ada@example.com"], page
    out = io.StringIO()
    assert auditor.export(out, "csv", tenant_id=ALL_TENANTS) == 1
    assert auditor.seal() is not None
    report = auditor.verify(public)
    assert report.ok, report.problems
    with auditor.stream("stream.ndjson") as relay:
        relay.drain()
    with open("stream.ndjson") as shipped:
        actions = [json.loads(line)["action"] for line in shipped]
    assert actions[0] == "customer.create" and len(actions) == auditor.count(
        tenant_id=ALL_TENANTS
    ), actions
    print("audited, listed, exported, sealed, verified and streamed one change")


def demo(url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/", timeout=5) as r:
                assert r.status == 200
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    with opener.open(url + "/signin/usr_ada", timeout=5) as r:
        assert r.status == 200
    with opener.open(url + "/audit/audit-logs", timeout=5) as r:
        data = json.load(r)["data"]
    assert data and all(e["tenant_id"] == "org_acme" for e in data), data[:1]
    with opener.open(url + "/audit/", timeout=5) as r:
        assert b"<html" in r.read().lower()
    print(f"demo answered: {len(data)} entries for usr_ada")


if __name__ == "__main__":
    if sys.argv[1] == "bare":
        bare()
    else:
        demo(sys.argv[2])
