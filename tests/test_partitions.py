"""Large logs on PostgreSQL: monthly partitions, and retention that drops whole months."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from support.entries import put
from whodid import ALL_TENANTS, Auditor, ConfigurationError
from whodid.store.partitions import add_partitions


def partitions(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'whodid_entries' "
                    "ORDER BY 1"
                )
            ).scalars()
        )


def test_retention_drops_expired_months_and_verify_still_passes(pg_empty_url):
    auditor = Auditor(pg_empty_url, signing_key=Ed25519PrivateKey.generate())
    auditor.create_all(partitioned=True)
    engine = auditor.engine
    assert engine is not None
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(days=430)).date()
    with engine.begin() as conn:
        add_partitions(conn, months_ahead=2, start=old)
    for days in (430, 425, 400):
        put(auditor, days_ago=days, entity=("customer", f"old_{days}"))
    put(auditor, days_ago=1, entity=("customer", "young"))
    auditor.seal()
    before = len(partitions(engine))
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM whodid_entries WHERE entity_id = 'young'"))
    with pytest.raises(sa.exc.DatabaseError, match="TRUNCATE rejected"), engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {partitions(engine)[-1]}"))

    [result] = auditor.purge(
        dt.datetime.now(dt.UTC) - dt.timedelta(days=365), tenant_id=ALL_TENANTS
    )
    assert result.rows == 3
    assert len(partitions(engine)) < before  # whole months dropped, not rows deleted
    with engine.connect() as conn:
        left = set(conn.execute(sa.text("SELECT entity_id FROM whodid_entries")).scalars())
    assert left == {"young", None}  # None: the audit_log.purge entry itself
    report = auditor.verify()
    assert report.ok, report.problems
    assert report.purged == 3


def test_partitioning_is_postgresql_only(sqlite_url):
    with pytest.raises(ConfigurationError, match="PostgreSQL"):
        Auditor(sqlite_url).create_all(partitioned=True)


def test_writes_and_queries_work_on_the_partitioned_table(pg_empty_url):
    auditor = Auditor(pg_empty_url)
    auditor.create_all(partitioned=True)
    auditor.create_all(partitioned=True)  # idempotent
    put(auditor, entity=("payment", "pay_1"))
    put(auditor, days_ago=2000, entity=("payment", "ancient"))  # lands in the default partition
    assert [
        e.entity_id for e in auditor.list(entity_id="pay_1", tenant_id=ALL_TENANTS).entries
    ] == ["pay_1"]
