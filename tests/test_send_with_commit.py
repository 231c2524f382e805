"""Entries of a commit's flush ride on the COMMIT (PostgreSQL, psycopg): one
round trip fewer, same guarantees. Real server, real statements counted."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from support.models import Base, Customer, auditor, read_entries
from support.pgserver import with_driver
from whodid import ALL_TENANTS, Actor, Auditor, audit_context
from whodid.store.drivers.send_with_commit import MAX_CALLS
from whodid.store.schema import INSERT_PROCEDURE

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(pg_url)
    Base.metadata.create_all(engine)
    auditor.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def Sessions(pg_engine: sa.Engine) -> Iterator[sessionmaker[Session]]:
    maker = sessionmaker(pg_engine)
    auditor.instrument(maker)
    with audit_context(actor=Actor.user("usr_1", "ada@example.com"), tenant_id="org_1"):
        yield maker


@pytest.fixture
def statements(pg_engine: sa.Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(pg_engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(pg_engine, "before_cursor_execute", record)


def _entry_statements(statements: list[str]) -> list[str]:
    return [st for st in statements if "whodid_entries" in st or INSERT_PROCEDURE + "(" in st]


def test_commit_sends_the_entries_with_the_commit(Sessions, pg_engine, statements):
    with Sessions() as s:
        s.add(Customer(email="a@example.com"))
        s.commit()
    [sent] = _entry_statements(statements)
    # One CALL of the procedure create_all made, and the COMMIT, in one query.
    assert sent.startswith(f"CALL {INSERT_PROCEDURE}(") and sent.endswith("; COMMIT")
    assert sent.count("CALL ") == 1
    [entry] = read_entries(pg_engine)
    assert entry.action == "customer.create" and entry.verify_digest()


def test_a_few_entries_are_one_call_each(Sessions, pg_engine, statements):
    with Sessions() as s:
        s.add_all([Customer(email=f"c{i}@example.com") for i in range(MAX_CALLS)])
        s.commit()
    [sent] = _entry_statements(statements)
    assert sent.count(f"CALL {INSERT_PROCEDURE}(") == MAX_CALLS and sent.endswith("; COMMIT")
    entries = read_entries(pg_engine)
    assert len(entries) == MAX_CALLS and all(e.verify_digest() for e in entries)


def test_more_entries_are_one_insert(Sessions, pg_engine, statements):
    with Sessions() as s:
        s.add_all([Customer(email=f"c{i}@example.com") for i in range(MAX_CALLS + 1)])
        s.commit()
    [sent] = _entry_statements(statements)
    assert sent.startswith("INSERT INTO whodid_entries") and sent.endswith("; COMMIT")
    assert "CALL " not in sent
    entries = read_entries(pg_engine)
    assert len(entries) == MAX_CALLS + 1 and all(e.verify_digest() for e in entries)


def test_called_and_inserted_entries_are_stored_alike(Sessions, pg_engine):
    # The same entry content down both paths: every field reads back the same.
    rows = []
    for n in (1, MAX_CALLS + 1):
        with Sessions() as s:
            s.add_all([Customer(email="same@example.com", org_id="t'1") for _ in range(n)])
            s.commit()
        rows.append(read_entries(pg_engine)[-1])
    called, inserted = (
        {k: v for k, v in e.to_dict().items() if k not in ("id", "seq", "digest", "occurred_at")}
        for e in rows
    )
    assert {k: v for k, v in called.items() if k not in ("entity_id", "after")} == {
        k: v for k, v in inserted.items() if k not in ("entity_id", "after")
    }
    assert called["after"]["email"] == inserted["after"]["email"] == "same@example.com"
    assert all(e.verify_digest() for e in rows)


def test_a_log_without_the_procedure_gets_the_insert(pg_url):
    # A log created before the procedure existed, whose create_all was not run
    # again: the entries still ride, as the INSERT.
    engine = sa.create_engine(pg_url)
    Base.metadata.create_all(engine)
    auditor.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP PROCEDURE {INSERT_PROCEDURE}")
    seen: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda c, cu, st, *a: seen.append(st))
    maker = sessionmaker(engine)
    auditor.instrument(maker)
    with maker() as s:
        s.add(Customer(email="a@example.com"))
        s.commit()
    [sent] = _entry_statements(seen)
    assert sent.startswith("INSERT INTO whodid_entries") and sent.endswith("; COMMIT")
    [entry] = read_entries(engine)
    assert entry.after["email"] == "a@example.com" and entry.verify_digest()

    # create_all puts the procedure back for an existing log; new connections use it.
    auditor.create_all(engine)
    engine.dispose()
    seen.clear()
    with maker() as s:
        s.add(Customer(email="b@example.com"))
        s.commit()
    [sent] = _entry_statements(seen)
    assert sent.startswith(f"CALL {INSERT_PROCEDURE}(")
    assert [e.after["email"] for e in read_entries(engine)] == ["a@example.com", "b@example.com"]
    engine.dispose()


def test_called_entries_are_queued_for_search(Sessions, pg_engine):
    with Sessions() as s:
        s.add(Customer(email="findme@example.com"))
        s.commit()
    with pg_engine.connect() as conn:
        queued = conn.exec_driver_sql("SELECT count(*) FROM whodid_search_queue").scalar_one()
    assert queued == 1
    found = Auditor(pg_engine).list(q="ada@example", tenant_id=ALL_TENANTS).entries
    assert [e.after["email"] for e in found] == ["findme@example.com"]


def test_a_flush_before_commit_is_written_at_once(Sessions, pg_engine, statements):
    with Sessions() as s:
        s.add(Customer(email="a@example.com"))
        s.flush()
        # Visible inside the transaction, before the commit.
        count = s.execute(sa.text("SELECT count(*) FROM whodid_entries")).scalar_one()
        assert count == 1
        s.commit()
    assert not any(st.endswith("; COMMIT") for st in statements)
    assert len(read_entries(pg_engine)) == 1


def test_tricky_text_is_stored_exactly(Sessions, pg_engine):
    # Quotes, backslashes, percent signs and placeholders, non-ASCII and
    # control characters, all inlined as literals.
    email = "o'brien\\\\x%s%(x)s$1;--\n\t\u00fc\u2028\U0001f600@example.com"
    with Sessions() as s:
        s.add(Customer(email=email, org_id="t'1"))
        s.commit()
    [entry] = read_entries(pg_engine)
    assert entry.after["email"] == email
    assert entry.verify_digest()


def test_a_failed_entry_insert_rolls_the_change_back(Sessions, pg_engine):
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(
            """CREATE OR REPLACE FUNCTION whodid_test_refuse() RETURNS trigger LANGUAGE plpgsql
            AS $$ BEGIN RAISE EXCEPTION 'refused by test'; END $$"""
        )
        conn.exec_driver_sql(
            """CREATE TRIGGER whodid_test_refuse BEFORE INSERT ON whodid_entries
            FOR EACH ROW EXECUTE FUNCTION whodid_test_refuse()"""
        )
    try:
        with Sessions() as s:
            s.add(Customer(email="a@example.com"))
            with pytest.raises(sa.exc.DBAPIError, match="refused by test"):
                s.commit()
        with pg_engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM customers").scalar_one() == 0
        # The pooled connection is clean again and the next commit rides normally.
    finally:
        with pg_engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER whodid_test_refuse ON whodid_entries")
    with Sessions() as s:
        s.add(Customer(email="b@example.com"))
        s.commit()
    assert [e.after["email"] for e in read_entries(pg_engine)] == ["b@example.com"]


def test_a_failed_commit_leaves_no_entry(Sessions, pg_engine):
    # A deferred constraint fails at COMMIT, after the entry INSERT ran.
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(
            "ALTER TABLE customers ADD CONSTRAINT whodid_test_unique UNIQUE (email) "
            "DEFERRABLE INITIALLY DEFERRED"
        )
    try:
        with Sessions() as s:
            s.add_all([Customer(email="same@example.com"), Customer(email="same@example.com")])
            with pytest.raises(sa.exc.IntegrityError):
                s.commit()
        assert read_entries(pg_engine) == []
    finally:
        with pg_engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE customers DROP CONSTRAINT whodid_test_unique")


def test_session_joined_to_an_outer_transaction(pg_engine):
    with pg_engine.connect() as conn:
        outer = conn.begin()
        session = Session(bind=conn, join_transaction_mode="create_savepoint")
        auditor.instrument(session)
        session.add(Customer(email="a@example.com"))
        session.commit()  # releases the savepoint; the outer transaction goes on
        count = conn.exec_driver_sql("SELECT count(*) FROM whodid_entries").scalar_one()
        assert count == 1
        session.close()
        outer.rollback()
    assert read_entries(pg_engine) == []


def test_rollback_drops_what_was_held(Sessions, pg_engine):
    with pg_engine.connect() as conn:
        held = auditor.writer.drivers(conn).sender  # type: ignore[attr-defined]
    with Sessions() as s:
        s.add(Customer(email="a@example.com"))
        s.commit()
        s.add(Customer(email="b@example.com"))
        s.flush()
        s.rollback()
    assert not held._held  # nothing left behind for any connection
    assert [e.after["email"] for e in read_entries(pg_engine)] == ["a@example.com"]


def test_autocommit_connections_write_at_once(pg_engine):
    engine = pg_engine.execution_options(isolation_level="AUTOCOMMIT")
    maker = sessionmaker(engine)
    auditor.instrument(maker)
    with maker() as s:
        s.add(Customer(email="a@example.com"))
        s.commit()
    assert len(read_entries(pg_engine)) == 1


def test_values_that_cannot_be_inlined_take_the_parameter_path(Sessions, pg_engine):
    # A NUL cannot travel in a query text; the parameterised INSERT refuses it
    # the same way PostgreSQL always does, and nothing is committed.
    with Sessions() as s:
        s.add(Customer(email="nul\x00@example.com"))
        with pytest.raises(sa.exc.DataError):
            s.commit()
    assert read_entries(pg_engine) == []


def test_without_standard_conforming_strings_nothing_rides(pg_url):
    engine = sa.create_engine(
        pg_url, connect_args={"options": "-c standard_conforming_strings=off"}
    )
    Base.metadata.create_all(engine)
    auditor.create_all(engine)
    seen: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda c, cu, st, *a: seen.append(st))
    maker = sessionmaker(engine)
    auditor.instrument(maker)
    email = "back\\slash'quote@example.com"
    with maker() as s:
        s.add(Customer(email=email))
        s.commit()
    assert not any(st.endswith("; COMMIT") for st in seen)
    [entry] = read_entries(engine)
    assert entry.after["email"] == email and entry.verify_digest()
    engine.dispose()


def test_async_psycopg_rides_too(pg_url, pg_engine):
    seen: list[str] = asyncio.run(_async_commit(pg_url))
    assert any(st.endswith("; COMMIT") for st in seen)
    [entry] = read_entries(pg_engine)
    assert entry.after["email"] == "a@example.com" and entry.verify_digest()


async def _async_commit(pg_url: str) -> list[str]:
    engine = create_async_engine(with_driver(pg_url, "psycopg_async"))
    seen: list[str] = []
    sa.event.listen(
        engine.sync_engine, "before_cursor_execute", lambda c, cu, st, *a: seen.append(st)
    )
    maker = async_sessionmaker(engine)
    auditor.instrument(maker)
    session: AsyncSession
    async with maker() as session:
        session.add(Customer(email="a@example.com"))
        await session.commit()
    await engine.dispose()
    return seen
