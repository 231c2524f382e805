"""Free-text search on PostgreSQL: the search table filled off the write path.

Whatever the state of the indexer, ``q`` must find every committed entry and
nothing rolled back; indexing only changes how fast.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import sessionmaker

from support.entries import put
from support.models import Base, Customer
from whodid import ALL_TENANTS, Actor, Auditor, audit_context
from whodid.store.drivers.postgres import COPY_THRESHOLD
from whodid.store.search import index_pending


def _auditor(url: str, **kwargs: object) -> tuple[Auditor, sessionmaker]:
    auditor = Auditor(url, **kwargs)  # type: ignore[arg-type]
    engine = auditor.engine
    assert isinstance(engine, sa.Engine)
    Base.metadata.create_all(engine)
    auditor.create_all()
    auditor.track(Customer, feature="customer")
    return auditor, auditor.instrument(sessionmaker(engine))


def _counts(auditor: Auditor) -> tuple[int, int]:
    with auditor.engine.connect() as conn:  # type: ignore[union-attr]
        indexed = conn.execute(sa.text("SELECT count(*) FROM whodid_search")).scalar_one()
        queued = conn.execute(sa.text("SELECT count(*) FROM whodid_search_queue")).scalar_one()
    return indexed, queued


def _found(auditor: Auditor, q: str) -> set[str | None]:
    return {e.entity_id for e in auditor.list(q=q, limit=200, tenant_id=ALL_TENANTS).entries}


def test_new_entries_are_found_before_and_after_indexing(pg_url):
    auditor, Sessions = _auditor(pg_url)
    with (
        audit_context(actor=Actor.user("usr_needle", label="Haystack@Example.com")),
        Sessions() as s,
    ):
        s.add(Customer(email="haystack@example.com"))
        s.commit()
    assert _counts(auditor) == (0, 1)  # queued, not indexed: the write did no indexing
    assert len(_found(auditor, "usr_needle")) == 1
    assert len(_found(auditor, "HAYSTACK@example")) == 1  # case-insensitive
    assert auditor.index_search() == 1
    assert _counts(auditor) == (1, 0)
    assert len(_found(auditor, "usr_needle")) == 1
    assert _found(auditor, "nothing-like-this") == set()


def test_a_copy_sized_flush_queues_one_range_indexed_in_batches(pg_url):
    auditor, Sessions = _auditor(pg_url)
    n = COPY_THRESHOLD + 50
    with Sessions() as s:
        s.add_all([Customer(email=f"bulk{i:04d}@example.com") for i in range(n)])
        s.commit()
    assert _counts(auditor) == (0, 1)
    engine = auditor.engine
    assert isinstance(engine, sa.Engine)
    with engine.begin() as conn:  # a small batch leaves the rest of the range queued
        assert index_pending(conn, limit=100) == 100
    indexed, queued = _counts(auditor)
    assert (indexed, queued) == (100, 1)
    # Half indexed, half queued: both halves are found.
    assert auditor.count(q="customer.create", tenant_id=ALL_TENANTS) == n
    auditor.index_search()
    assert _counts(auditor) == (n, 0)
    assert auditor.count(q="customer.create", tenant_id=ALL_TENANTS) == n


def test_rolled_back_entries_queue_nothing_and_open_ones_wait(pg_url):
    auditor, Sessions = _auditor(pg_url)
    with audit_context(actor=Actor.user("usr_gone")), Sessions() as s:
        s.add(Customer(email="gone@example.com"))
        s.flush()
        s.rollback()
    assert _counts(auditor) == (0, 0)
    with audit_context(actor=Actor.user("usr_later")):
        open_session = Sessions()
        open_session.add(Customer(email="later@example.com"))
        open_session.flush()  # written, not committed: invisible to the indexer
    with Sessions() as s:
        s.add(Customer(email="now@example.com"))
        s.commit()
    auditor.index_search()
    assert _counts(auditor) == (1, 0)
    open_session.commit()
    open_session.close()
    assert _found(auditor, "usr_later") != set()  # found while still queued
    auditor.index_search()
    assert _counts(auditor) == (2, 0)
    assert _found(auditor, "usr_gone") == set()


def test_search_on_a_partitioned_log(pg_url):
    auditor, Sessions = _auditor(pg_url)
    engine = auditor.engine
    assert isinstance(engine, sa.Engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE whodid_entries CASCADE")
    auditor.create_all(partitioned=True)
    with audit_context(actor=Actor.user("usr_parted")), Sessions() as s:
        s.add(Customer(email="parted@example.com"))
        s.commit()
    assert len(_found(auditor, "usr_parted")) == 1
    assert auditor.index_search() >= 1
    assert _counts(auditor) == (1, 0)
    assert len(_found(auditor, "usr_parted")) == 1


def test_purge_drops_the_search_text_of_purged_entries(pg_url):
    auditor, Sessions = _auditor(pg_url)
    put(auditor, days_ago=400, metadata={"note": "ancient"})
    with Sessions() as s:
        s.add(Customer(email="fresh@example.com"))
        s.commit()
    auditor.index_search()
    assert _counts(auditor) == (2, 0)
    auditor.purge(before=dt.datetime.now(dt.UTC) - dt.timedelta(days=366), tenant_id=ALL_TENANTS)
    auditor.index_search()  # the purge's own audit entry
    indexed, _ = _counts(auditor)
    assert indexed == 2  # the fresh entry and the purge record; the ancient one is gone
    assert auditor.count(q="ancient", tenant_id=ALL_TENANTS) == 0


def test_create_all_adds_search_to_a_log_made_before_it(pg_url):
    auditor, Sessions = _auditor(pg_url)
    engine = auditor.engine
    assert isinstance(engine, sa.Engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE whodid_search, whodid_search_queue")
        conn.exec_driver_sql("DROP TRIGGER whodid_entries_search ON whodid_entries")
    with audit_context(actor=Actor.user("usr_old")), Sessions() as s:
        s.add(Customer(email="old@example.com"))
        s.commit()
    auditor.create_all()  # what the upgrade note says to run
    with audit_context(actor=Actor.user("usr_new")), Sessions() as s:
        s.add(Customer(email="new@example.com"))
        s.commit()
    assert len(_found(auditor, "usr_new")) == 1
    assert len(_found(auditor, "usr_old")) == 1  # written before: queued by the upgrade
    auditor.index_search()
    assert _counts(auditor) == (2, 0)
    assert len(_found(auditor, "usr_old")) == 1


def test_queued_entries_are_read_by_primary_key_not_by_scanning_the_log(pg_url):
    """On a big log the planner must not filter every entry by text to find queued ones."""
    from whodid.context import RequestContext
    from whodid.store.query import Filters
    from whodid.store.schema import entries
    from whodid.store.writer import Change

    auditor, _ = _auditor(pg_url)
    engine = auditor.engine
    assert isinstance(engine, sa.Engine)
    writer = auditor.writer
    ctx = RequestContext(actor=Actor.user("usr_bulk"), tenant_id="org_1")
    changes = [Change("payment", "create", "payment", f"pay_{i}") for i in range(30_000)]
    with engine.begin() as conn:
        writer.write(conn, writer.rows(changes, ctx))
    auditor.index_search()
    with engine.begin() as conn:
        writer.write(conn, writer.rows([Change("payment", "create", "payment", "pay_new")], ctx))
        conn.exec_driver_sql("ANALYZE whodid_entries")
        conn.exec_driver_sql("ANALYZE whodid_search")
    conditions = Filters.build(tenant_id="org_1", q="pay_new").conditions()
    stmt = (
        sa.select(entries.c.seq)
        .where(*conditions)
        .order_by(entries.c.occurred_at.desc(), entries.c.seq.desc())
        .limit(51)
    )
    with engine.connect() as conn:
        sql = str(stmt.compile(conn, compile_kwargs={"literal_binds": True}))
        plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql.replace("%", "%%")))
    assert "Seq Scan on whodid_entries" not in plan, plan
    assert [e.entity_id for e in auditor.list(tenant_id="org_1", q="pay_new").entries] == [
        "pay_new"
    ]
