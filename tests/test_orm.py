"""ORM hooks on real SQLite and PostgreSQL: what each change turns into."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from support.models import (
    Base,
    Blob,
    Customer,
    Note,
    Opaque,
    Rate,
    Status,
    Wallet,
    auditor,
    read_entries,
)
from whodid import Actor, ConfigurationError, audit_context


@pytest.fixture
def Sessions(engine: sa.Engine) -> Iterator[sessionmaker[Session]]:
    Base.metadata.create_all(engine)
    auditor.create_all(engine)
    maker = sessionmaker(engine)
    auditor.instrument(maker)
    with audit_context(actor=Actor.user("usr_1", "ada@example.com"), tenant_id="org_1"):
        yield maker


def add_customer(Sessions: sessionmaker[Session], **fields: object) -> int:
    with Sessions() as s:
        c = Customer(email="a@example.com", **fields)
        s.add(c)
        s.commit()
        return c.id


def test_insert_records_full_row_with_new_primary_key(Sessions, engine):
    cid = add_customer(Sessions, balance=Decimal("10.10"), tax_id="DE123", password_hash="h")
    [e] = read_entries(engine)
    assert (e.action, e.feature, e.operation) == ("customer.create", "customer", "create")
    assert (e.entity_type, e.entity_id) == ("customers", str(cid))
    assert e.before is None
    assert e.after["id"] == cid
    assert e.after["email"] == "a@example.com"
    assert e.after["balance"] == "10.10"
    assert e.after["tax_id"] == "[REDACTED]"  # configured
    assert e.after["password_hash"] == "[REDACTED]"  # default pattern
    assert "updated_at" not in e.after  # excluded
    assert (e.actor_type, e.actor_id, e.actor_label) == ("user", "usr_1", "ada@example.com")
    assert e.tenant_id == "org_1"
    assert e.id.startswith("log_") and len(e.id) == 30
    assert e.occurred_at.tzinfo is not None
    assert e.verify_digest()


def test_entries_of_tracked_models_take_the_fast_encoding(Sessions, monkeypatch):
    """Names taken from the table are plain str, not SQLAlchemy's quoted_name:
    a str subclass sends every entry through the stdlib encoder, which gives the
    same bytes but took after_flush from 183 to 237 µs per PostgreSQL commit."""
    from whodid.store import writer

    spec = auditor.capture.spec_for(Customer)
    assert type(spec.entity_type) is str and type(spec.feature) is str
    results = []
    fast = writer._fast_encoded

    def spy(row, client, base):
        results.append(fast(row, client, base))
        return results[-1]

    monkeypatch.setattr(writer, "_fast_encoded", spy)
    add_customer(Sessions, balance=Decimal("1.00"))
    assert len(results) == 1 and results[0] is not None


def test_values_are_stored_exactly(Sessions, engine):
    ext = uuid.uuid4()
    signed_up = dt.datetime(2026, 3, 1, 14, 32, 0, 123456, tzinfo=dt.UTC)
    add_customer(
        Sessions,
        balance=Decimal("1234567890.12"),
        status=Status.frozen,
        external_id=ext,
        signed_up=signed_up,
        birthday=dt.date(1990, 2, 28),
        avatar=b"\x00\xff\x10",
        settings={"limits": {"daily": 1.5}, "note": "ünï"},
    )
    [e] = read_entries(engine)
    assert e.after["balance"] == "1234567890.12"
    assert e.after["status"] == "frozen"
    assert e.after["external_id"] == str(ext)
    assert e.after["signed_up"] == "2026-03-01T14:32:00.123456Z"
    assert e.after["birthday"] == "1990-02-28"
    assert e.after["avatar"] == {"$base64": "AP8Q"}
    assert e.after["settings"] == {"limits": {"daily": 1.5}, "note": "ünï"}


def test_update_records_only_changed_fields(Sessions, engine):
    cid = add_customer(Sessions, balance=Decimal("5"))
    with Sessions() as s:
        c = s.get(Customer, cid)
        c.email = "b@example.com"
        c.balance = Decimal("7.50")
        s.commit()
    e = read_entries(engine)[-1]
    assert e.action == "customer.update"
    assert e.before == {"email": "a@example.com", "balance": "5.00"}
    assert e.after == {"email": "b@example.com", "balance": "7.50"}
    assert e.entity_id == str(cid)


def test_update_of_expired_attribute_still_has_old_value(Sessions, engine):
    with Sessions() as s:
        c = Customer(email="a@example.com")
        s.add(c)
        s.commit()  # expires every attribute
        c.email = "z@example.com"  # old value loaded first (active history)
        s.commit()
    e = read_entries(engine)[-1]
    assert e.before == {"email": "a@example.com"}
    assert e.after == {"email": "z@example.com"}


def test_tracked_columns_keep_old_values_without_a_set_listener():
    """Active history is on for every tracked column (the test above depends
    on it), and no "set" listener runs on each assignment in the app's code."""
    for key, _ in auditor.capture.spec_for(Customer).columns:
        attribute = getattr(Customer, key)
        assert attribute.impl.active_history, key
        assert not attribute.dispatch.set, key


def test_no_op_updates_write_nothing(Sessions, engine):
    cid = add_customer(Sessions)
    with Sessions() as s:
        c = s.get(Customer, cid)
        c.email = "a@example.com"  # same value
        s.commit()
        c.updated_at = "2026-01-01"  # excluded only
        s.commit()
    assert [e.action for e in read_entries(engine)] == ["customer.create"]


def test_redacted_field_change_is_visible_but_not_its_value(Sessions, engine):
    cid = add_customer(Sessions, password_hash="old")
    with Sessions() as s:
        s.get(Customer, cid).password_hash = "new"
        s.commit()
    e = read_entries(engine)[-1]
    assert e.before == {"password_hash": "[REDACTED]"}
    assert e.after == {"password_hash": "[REDACTED, changed]"}  # changed, value unknown
    with engine.connect() as conn:
        dump = str(conn.execute(sa.text("SELECT * FROM whodid_entries")).all())
    for secret in ("old", "new"):
        assert f"'{secret}'" not in dump and f'"{secret}"' not in dump


def test_json_column_diffs_at_nested_depth(Sessions, engine):
    cid = add_customer(
        Sessions, settings={"limits": {"daily": 100, "monthly": 900}, "tags": ["a"], "x": 1}
    )
    with Sessions() as s:
        c = s.get(Customer, cid)
        c.settings = {"limits": {"daily": 200, "monthly": 900}, "tags": ["a", "b"], "y": 2}
        s.commit()
    e = read_entries(engine)[-1]
    assert e.before == {"settings": {"limits": {"daily": 100}, "tags": ["a"], "x": 1}}
    assert e.after == {"settings": {"limits": {"daily": 200}, "tags": ["a", "b"], "y": 2}}


def test_delete_records_full_row_even_when_expired(Sessions, engine):
    cid = add_customer(Sessions, balance=Decimal("3.00"), tax_id="T")
    with Sessions() as s:
        c = s.get(Customer, cid)
        s.commit()  # expired: the hook must load the row before it is gone
        s.delete(c)
        s.commit()
    e = read_entries(engine)[-1]
    assert e.action == "customer.delete"
    assert e.after is None
    assert e.before["email"] == "a@example.com"
    assert e.before["balance"] == "3.00"
    assert e.before["tax_id"] == "[REDACTED]"


def test_cascaded_deletes_are_captured(Sessions, engine):
    with Sessions() as s:
        c = Customer(
            email="c@example.com", wallets=[Wallet(currency="EUR"), Wallet(currency="USD")]
        )
        s.add(c)
        s.commit()
        s.delete(c)
        s.commit()
    actions = [e.action for e in read_entries(engine)]
    assert sorted(actions[:3]) == ["customer.create", "wallets.create", "wallets.create"]
    assert sorted(actions[3:]) == ["customer.delete", "wallets.delete", "wallets.delete"]


def test_composite_primary_key_joined_with_colon(Sessions, engine):
    with Sessions() as s:
        s.add(Rate(base="EUR", quote="USD", rate=Decimal("1.08500000")))
        s.commit()
    [e] = read_entries(engine)
    assert (e.action, e.entity_type, e.entity_id) == ("fx.create", "rates", "EUR:USD")
    assert e.after["rate"] == "1.08500000"


def test_untracked_models_write_nothing(Sessions, engine):
    with Sessions() as s:
        s.add(Note(body="hello"))
        s.commit()
        s.execute(sa.update(Note).values(body="x"))
        s.execute(sa.delete(Note))
        s.commit()
    assert read_entries(engine) == []


def test_unserialisable_value_is_neutralised_and_entry_written(Sessions, engine):
    with Sessions() as s:
        s.add(Blob(payload=Opaque()))
        s.commit()
    [e] = read_entries(engine)
    assert e.after["payload"]["$unserializable"] == "Opaque"
    assert e.after["payload"]["repr"] == "Opaque()"


def test_many_changes_in_one_flush_are_one_statement(Sessions, engine):
    inserts: list[object] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("INSERT INTO WHODID_ENTRIES"):
            inserts.append(parameters)

    with Sessions() as s:
        s.add_all([Customer(email=f"{i}@example.com") for i in range(50)])
        s.commit()
    sa.event.remove(engine, "before_cursor_execute", count)
    assert len(read_entries(engine)) == 50
    assert len(inserts) == 1


def test_entry_insert_skips_the_engine_only_while_nothing_watches(sqlite_url, caplog):
    """Unwatched, the INSERT goes through the DBAPI cursor (about 11 µs less per
    SQLite write); echo, logging or any engine listener gets exec_driver_sql,
    so it still sees the INSERT."""
    import logging

    from whodid.store.drivers.base import unobserved as _unobserved

    engine = sa.create_engine(sqlite_url)
    Base.metadata.create_all(engine)
    auditor.create_all(engine)
    maker = sessionmaker(engine)
    auditor.instrument(maker)
    with engine.connect() as conn:
        assert _unobserved(conn)
    with caplog.at_level(logging.INFO, logger="sqlalchemy.engine.Engine"):
        with engine.connect() as conn:
            assert not _unobserved(conn)
        with audit_context(actor=Actor.user("usr_1")), maker() as s:
            s.add(Customer(email="logged@example.com"))
            s.commit()
    assert any("INSERT INTO whodid_entries" in r.getMessage() for r in caplog.records)
    seen: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def trace(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append(statement)

    with engine.connect() as conn:
        assert not _unobserved(conn)
    add_customer(maker)
    assert sum(s.startswith("INSERT INTO whodid_entries") for s in seen) == 1
    assert len(read_entries(engine)) == 2
    engine.dispose()


@pytest.mark.parametrize("at", ["flush", "commit"])
def test_a_failed_entry_insert_raises_sqlalchemy_error_and_undoes_the_change(Sessions, engine, at):
    """Whether the INSERT went through the cursor or the engine, the caller
    gets SQLAlchemy's error (as exec_driver_sql raises it), and the change
    it described is not committed."""
    with engine.begin() as conn:
        cascade = " CASCADE" if engine.dialect.name == "postgresql" else ""
        conn.exec_driver_sql("DROP TABLE whodid_entries" + cascade)
    with Sessions() as s, pytest.raises(sa.exc.DBAPIError, match="whodid_entries"):
        s.add(Customer(email="lost@example.com"))
        if at == "flush":
            s.flush()
        s.commit()
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(Customer)).scalar() == 0


def test_bulk_update_and_delete_statements_one_entry_per_row(Sessions, engine):
    for i in range(3):
        add_customer(Sessions, balance=Decimal(i))
    with Sessions() as s:
        result = s.execute(
            sa.update(Customer).where(Customer.balance >= 1).values(status=Status.frozen)
        )
        assert result.rowcount == 2
        s.commit()
    updates = [e for e in read_entries(engine) if e.operation == "update"]
    assert len(updates) == 2
    assert all(
        e.before == {"status": "active"} and e.after == {"status": "frozen"} for e in updates
    )
    with Sessions() as s:
        s.execute(sa.delete(Customer).where(Customer.status == Status.frozen))
        s.commit()
    deletes = [e for e in read_entries(engine) if e.operation == "delete"]
    assert sorted(e.before["balance"] for e in deletes) == ["1.00", "2.00"]


def test_dml_inside_select_from_statement_is_audited(Sessions, engine):
    """select(Model).from_statement(update(...).returning(Model)) is an ORM
    UPDATE too (SQLAlchemy 2.0.30+): it must run, and get its entries."""
    ids = [add_customer(Sessions, balance=Decimal(i)) for i in range(2)]
    with Sessions() as s:
        updated = s.execute(
            sa.select(Customer).from_statement(
                sa.update(Customer)
                .where(Customer.id == ids[1])
                .values(status=Status.frozen)
                .returning(Customer)
            )
        ).scalars()
        assert [c.id for c in updated] == [ids[1]]
        s.commit()
    with Sessions() as s:
        deleted = s.execute(
            sa.select(Customer).from_statement(
                sa.delete(Customer).where(Customer.id == ids[0]).returning(Customer)
            )
        ).scalars()
        assert [c.id for c in deleted] == [ids[0]]
        s.commit()
    entries = read_entries(engine)
    [update] = [e for e in entries if e.operation == "update"]
    assert (update.entity_id, update.before, update.after) == (
        str(ids[1]),
        {"status": "active"},
        {"status": "frozen"},
    )
    [delete] = [e for e in entries if e.operation == "delete"]
    assert delete.entity_id == str(ids[0])


def test_bulk_update_by_primary_key(Sessions, engine):
    ids = [add_customer(Sessions) for _ in range(2)]
    with Sessions() as s:
        s.execute(sa.update(Customer), [{"id": i, "email": f"{i}@new.example"} for i in ids])
        s.commit()
    updates = [e for e in read_entries(engine) if e.operation == "update"]
    assert sorted(e.entity_id for e in updates) == sorted(str(i) for i in ids)
    assert all(e.before == {"email": "a@example.com"} for e in updates)


@pytest.mark.parametrize("ending", ["rollback", "exception", "close", "savepoint"])
def test_entries_never_outlive_their_change(Sessions, engine, ending):
    with Sessions() as s:
        if ending == "rollback":
            s.add(Customer(email="r@example.com"))
            s.flush()
            s.rollback()
        elif ending == "exception":
            with pytest.raises(RuntimeError), s.begin():
                s.add(Customer(email="x@example.com"))
                s.flush()
                raise RuntimeError("boom")
        elif ending == "close":
            s.add(Customer(email="c@example.com"))
            s.flush()
        else:
            s.add(Customer(email="kept@example.com"))
            with s.begin_nested() as sp:
                s.add(Customer(email="gone@example.com"))
                s.flush()
                sp.rollback()
            s.commit()
    emails = [e.after["email"] for e in read_entries(engine)]
    assert emails == (["kept@example.com"] if ending == "savepoint" else [])
    with engine.connect() as conn:
        rows = conn.execute(sa.select(Customer.email)).scalars().all()
    assert rows == emails  # the change and its entry together, or neither


def test_several_flushes_in_one_transaction(Sessions, engine):
    with Sessions() as s:
        c = Customer(email="f@example.com")
        s.add(c)
        s.flush()
        c.email = "g@example.com"
        s.flush()
        s.commit()
    assert [e.operation for e in read_entries(engine)] == ["create", "update"]


def test_tenant_from_row_when_context_has_none(engine):
    Base.metadata.create_all(engine)
    auditor.create_all(engine)
    maker = sessionmaker(engine)
    auditor.instrument(maker)
    with audit_context(actor=Actor.system("import-job")), maker() as s:
        s.add(Customer(email="t@example.com", org_id="org_9"))
        s.commit()
    [e] = read_entries(engine)
    assert e.tenant_id == "org_9"
    assert (e.actor_type, e.actor_id) == ("system", "import-job")


def test_outside_any_context_the_actor_is_unattributed_system(engine):
    Base.metadata.create_all(engine)
    auditor.create_all(engine)
    maker = sessionmaker(engine)
    auditor.instrument(maker)
    with maker() as s:
        s.add(Note(body="n"))
        s.add(Customer(email="u@example.com"))
        s.commit()
    [e] = read_entries(engine)
    assert (e.actor_type, e.actor_id, e.request_id, e.ip) == ("system", None, None, None)


def test_record_joins_the_session_transaction(Sessions, engine):
    with Sessions() as s:
        auditor.record(
            "payment.refund",
            entity=("payment", "pay_1"),
            metadata={"amount": Decimal("5.00")},
            session=s,
        )
        s.rollback()
    assert read_entries(engine) == []
    with Sessions() as s:
        auditor.record(
            "payment.refund",
            entity=("payment", "pay_1"),
            metadata={"amount": Decimal("5.00")},
            session=s,
        )
        s.commit()
    [e] = read_entries(engine)
    assert (e.action, e.feature, e.operation) == ("payment.refund", "payment", "refund")
    assert (e.entity_type, e.entity_id, e.metadata) == ("payment", "pay_1", {"amount": "5.00"})
    assert e.actor_id == "usr_1"


def test_record_without_session_commits_on_its_own(engine):
    from whodid import Auditor

    standalone = Auditor(engine)
    standalone.create_all()
    standalone.record(
        "auth.signin.failed",
        entity=("user", "usr_7"),
        actor=Actor("anonymous"),
        tenant_id="org_2",
        metadata={"reason": "bad password"},
    )
    [e] = read_entries(engine)
    assert (e.feature, e.operation, e.tenant_id) == ("auth", "signin.failed", "org_2")
    assert e.actor_type == "anonymous"


def test_track_rejects_what_it_cannot_audit():
    class NotMapped:
        pass

    with pytest.raises(ConfigurationError, match="mapped SQLAlchemy class"):
        auditor.track(NotMapped)
    with pytest.raises(ConfigurationError, match="no column attribute 'nope'"):
        auditor.track(Note, exclude={"nope"})
    with pytest.raises(ConfigurationError, match="sessionmaker"):
        auditor.instrument(object())


def test_large_flush_goes_through_copy_on_postgresql_and_stays_atomic(Sessions, engine):
    # 250 entries cross the COPY threshold on PostgreSQL; SQLite uses executemany.
    with Sessions() as s:
        s.add_all([Customer(email=f"{i}@bulk.example", settings={"n": i}) for i in range(250)])
        s.flush()
        s.rollback()
    assert read_entries(engine) == []
    with Sessions() as s:
        s.add_all([Customer(email=f"{i}@bulk.example", settings={"ü": i}) for i in range(250)])
        s.commit()
    rows = read_entries(engine)
    assert len(rows) == 250
    assert all(e.verify_digest() for e in rows)
    seventh = next(e for e in rows if e.after["email"] == "7@bulk.example")
    assert seventh.after["settings"] == {"ü": 7} and seventh.before is None
