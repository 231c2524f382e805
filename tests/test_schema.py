"""The audit table is append-only in the database itself, not only in whodid."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from whodid import Actor, Auditor
from whodid.store.schema import entries


@pytest.fixture
def auditor(engine: sa.Engine) -> Auditor:
    auditor = Auditor(engine)
    auditor.create_all()
    auditor.record("auth.signin", entity=("user", "usr_1"), actor=Actor.user("usr_1"))
    return auditor


def test_create_all_is_idempotent_and_makes_the_query_indexes(auditor, engine):
    auditor.create_all()  # second run: no error, no duplicate triggers
    names = {ix["name"] for ix in sa.inspect(engine).get_indexes("whodid_entries")}
    assert {
        "ix_whodid_tenant_time",
        "ix_whodid_entity",
        "ix_whodid_actor",
        "ix_whodid_request",
        "ix_whodid_action",
    } <= names


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE whodid_entries SET action = 'forged'",
        "UPDATE whodid_entries SET metadata = metadata",
        "DELETE FROM whodid_entries",
        "DELETE FROM whodid_entries WHERE seq = 1",
    ],
)
def test_plain_sql_update_and_delete_are_rejected(auditor, engine, sql):
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text(sql))
    with engine.connect() as conn:
        [row] = conn.execute(sa.select(entries.c.action)).all()
    assert row.action == "auth.signin"


def test_truncate_is_rejected_on_postgresql(pg_url):
    # TRUNCATE exists only on PostgreSQL, and row triggers never see it.
    engine = sa.create_engine(pg_url)
    Auditor(engine).create_all()
    Auditor(engine).record("auth.signin")
    with pytest.raises(sa.exc.DatabaseError, match="TRUNCATE rejected"), engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE whodid_entries"))
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(entries)).scalar() == 1


def test_orm_free_inserts_still_work(auditor, engine):
    auditor.record("auth.signout")
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(entries)).scalar() == 2
