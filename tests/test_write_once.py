"""Write-once: no DML of the application's role changes or removes an entry or checkpoint.

Each door is tried as an attacker holding the application's database
connection would: REPLACE, upserts, opening the purge window by hand, a purge
horizon in the future, and on PostgreSQL with the documented role split, DDL.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from support.entries import put
from whodid import ALL_TENANTS, Auditor, InvalidQuery
from whodid.cli import main
from whodid.integrity.keys import generate_key_pair

DATA = Path(__file__).parent / "data"
NOW = dt.datetime.now(dt.UTC)


def make_sealed(url: str, tmp_path: Path) -> Auditor:
    private, _ = generate_key_pair(str(tmp_path / "k.pem"))
    auditor = Auditor(url, signing_key=private, seal_grace=dt.timedelta(0))
    auditor.create_all()
    for i in range(3):
        put(auditor, days_ago=10 - i, entity=("customer", f"cus_{i}"))
    auditor.seal()
    return auditor


@pytest.fixture
def sealed(db_url: str, tmp_path: Path) -> Auditor:
    return make_sealed(db_url, tmp_path)


def entries_of(auditor: Auditor) -> list[tuple[int, str, str]]:
    with auditor.engine.connect() as conn:  # type: ignore[union-attr]
        rows = conn.exec_driver_sql("SELECT seq, id, digest FROM whodid_entries ORDER BY seq")
        return [tuple(r) for r in rows]  # type: ignore[misc]


def attempt(auditor: Auditor, sql: str) -> None:
    with pytest.raises(sa.exc.DatabaseError), auditor.engine.begin() as conn:  # type: ignore[union-attr]
        conn.exec_driver_sql(sql)


REPLACES = [
    "REPLACE INTO whodid_entries (seq, id, occurred_at, action, feature, operation, actor_type,"
    " passkey, metadata, digest) SELECT seq, 'log_X', occurred_at, 'x.y', 'x', 'y', 'system',"
    " 0, '{}', digest FROM whodid_entries WHERE seq = 1",
    "INSERT OR REPLACE INTO whodid_entries (id, occurred_at, action, feature, operation,"
    " actor_type, passkey, metadata, digest) SELECT id, occurred_at, 'x.y', 'x', 'y', 'system',"
    " 0, '{}', digest FROM whodid_entries WHERE seq = 2",
    "REPLACE INTO whodid_checkpoints SELECT number, kind, created_at, hi, 0, root, leaves, info,"
    " prev_hash, payload, signature, key_id FROM whodid_checkpoints WHERE number = 1",
]


@pytest.mark.parametrize("sql", REPLACES, ids=["replace-seq", "or-replace-id", "checkpoint"])
def test_sqlite_replace_cannot_rewrite_an_entry_or_checkpoint(sql, sqlite_url, tmp_path):
    sealed = make_sealed(sqlite_url, tmp_path)
    before = entries_of(sealed)
    attempt(sealed, sql)
    assert entries_of(sealed) == before
    assert sealed.verify().ok


def test_upserts_cannot_rewrite_an_entry(sealed):
    before = entries_of(sealed)
    attempt(
        sealed,
        "INSERT INTO whodid_entries (seq, id, occurred_at, action, feature, operation, "
        "actor_type, passkey, metadata, digest) SELECT seq, id, occurred_at, 'x.y', 'x', 'y', "
        "'system', false, '{}', digest FROM whodid_entries WHERE seq = 1 "
        "ON CONFLICT (seq) DO UPDATE SET action = 'forged.action'",
    )
    assert entries_of(sealed) == before


def test_opening_the_purge_window_by_hand_deletes_nothing(sealed):
    before = entries_of(sealed)
    for sql in (
        "INSERT INTO whodid_purge_window (before) VALUES ('2999-01-01 00:00:00')",
        "DELETE FROM whodid_entries",
    ):
        try:
            with sealed.engine.begin() as conn:  # type: ignore[union-attr]
                conn.exec_driver_sql(sql)
        except sa.exc.DatabaseError:
            pass
    with pytest.raises(sa.exc.DatabaseError), sealed.engine.begin() as conn:  # type: ignore[union-attr]
        conn.exec_driver_sql(
            "INSERT INTO whodid_purge_window (before) VALUES ('2999-01-01 00:00:00')"
        )
        conn.exec_driver_sql("DELETE FROM whodid_entries")
    assert entries_of(sealed) == before
    # The one real door still opens, and says so.
    purged = sealed.purge(NOW - dt.timedelta(days=9, hours=12), tenant_id=ALL_TENANTS)
    assert [p.rows for p in purged] == [1]
    assert sealed.verify().ok


def test_a_future_horizon_is_refused(sealed):
    with pytest.raises(InvalidQuery, match="never in the future"):
        sealed.purge(NOW + dt.timedelta(days=30), tenant_id=ALL_TENANTS)
    with pytest.raises(InvalidQuery, match="never in the future"):
        sealed.purge(NOW + dt.timedelta(days=30), tenant_id="org_1")
    assert len(entries_of(sealed)) == 3


def test_purge_older_than_0d_asks_naming_entries_and_tenants(sealed, db_url, tmp_path):
    put(sealed, days_ago=5, tenant="org_2")
    key = str(tmp_path / "k.pem")
    result = CliRunner().invoke(
        main,
        ["purge", "--db", db_url, "--key", key, "--older-than", "0d", "--all-tenants"],
        input="n\n",
    )
    assert "delete 4 entries of 2 tenants older than" in result.output
    assert result.exit_code == 1 and "Aborted" in result.output
    assert len(entries_of(sealed)) == 4


def test_seqs_are_never_reused_after_the_newest_entries_are_purged(sealed):
    top = entries_of(sealed)[-1][0]
    sealed.purge(
        NOW - dt.timedelta(hours=1), tenant_id=ALL_TENANTS
    )  # every entry: all are days old
    # Left: the purge's own audit_log.purge entry, numbered after the purged ones.
    assert [seq for seq, _, _ in entries_of(sealed)] == [top + 1]
    put(sealed)
    newest = entries_of(sealed)[-1][0]
    assert newest > top + 1  # past the purge's own audit_log.purge entry too
    sealed.seal()
    report = sealed.verify()
    assert report.ok, report.problems


# -- an upgrade of a log made by the previous whodid -------------------------------


def old_sqlite_log(path: Path) -> str:
    """A log made by whodid before this schema (dumped by that version's code)."""
    con = sqlite3.connect(path)
    con.executescript((DATA / "log_v1.sqlite.sql").read_text())
    con.close()
    return f"sqlite:///{path}"


def test_upgrade_keeps_every_seq_and_digest_and_closes_the_doors(tmp_path):
    url = old_sqlite_log(tmp_path / "old.db")
    key = (DATA / "log_v1.pem").read_bytes()
    auditor = Auditor(url, signing_key=key, seal_grace=dt.timedelta(0))
    before = entries_of(auditor)
    assert auditor.verify().ok
    # The old log's doors: REPLACE rewrites an entry (done on a copy, to show it).
    copy = tmp_path / "copy.db"
    copy.write_bytes((tmp_path / "old.db").read_bytes())
    with sqlite3.connect(copy) as con:
        con.execute(REPLACES[0])
    assert Auditor(f"sqlite:///{copy}", signing_key=key).verify().ok is False

    result = CliRunner().invoke(main, ["upgrade", "--db", url])
    assert result.exit_code == 0, result.output
    assert "AUTOINCREMENT" in result.output
    assert entries_of(auditor) == before
    report = auditor.verify()
    assert report.ok and report.entries == 6, report.problems
    for sql in REPLACES:
        attempt(auditor, sql)
    attempt(auditor, "DELETE FROM whodid_entries")
    # Seqs go on from the old ones; a second upgrade changes nothing.
    put(auditor)
    assert entries_of(auditor)[-1][0] == 7
    assert auditor.upgrade() == ["replaced the UPDATE, DELETE and REPLACE guards"]
    auditor.seal()
    assert auditor.verify().ok


@pytest.mark.postgres
def test_upgrade_replaces_the_old_postgres_guard(pg_url, tmp_path):
    private, _ = generate_key_pair(str(tmp_path / "k.pem"))
    auditor = Auditor(pg_url, signing_key=private, seal_grace=dt.timedelta(0))
    auditor.create_all()
    put(auditor, days_ago=3)
    auditor.seal()
    with auditor.engine.begin() as conn:  # type: ignore[union-attr]
        old_guard = (DATA / "log_v1_postgres_reject.sql").read_text()
        conn.exec_driver_sql(old_guard, execution_options={"no_parameters": True})
    # What the old guard let through: DML opening the purge window.
    with auditor.engine.begin() as conn:  # type: ignore[union-attr]
        conn.exec_driver_sql("INSERT INTO whodid_purge_window (before) VALUES ('2999-01-01')")
        assert conn.exec_driver_sql("DELETE FROM whodid_entries").rowcount == 1
        conn.rollback()
    assert auditor.upgrade() == ["replaced the guard function and triggers"]
    attempt(
        auditor,
        "INSERT INTO whodid_purge_window (before) VALUES ('2999-01-01');DELETE FROM whodid_entries",
    )
    assert len(entries_of(auditor)) == 1
    assert auditor.verify().ok


# -- PostgreSQL with the documented role split ------------------------------------

_roles = iter(range(1, 10_000))


@pytest.fixture
def two_roles(pg_empty_url: str) -> tuple[str, str, str]:
    """The log's owner and the application's role, as two real login roles."""
    n = next(_roles)
    owner, app = f"whodid_owner_{n}", f"whodid_app_{n}"
    admin = sa.create_engine(pg_empty_url)
    with admin.begin() as conn:
        for role in (owner, app):
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
            conn.exec_driver_sql(f"GRANT CREATE ON SCHEMA public TO {role}")
    admin.dispose()
    url = sa.engine.make_url(pg_empty_url)
    as_role = [url.set(username=r).render_as_string(hide_password=False) for r in (owner, app)]
    return as_role[0], as_role[1], app


@pytest.mark.postgres
def test_the_application_role_can_write_entries_and_nothing_else(two_roles, tmp_path):
    from sqlalchemy.orm import sessionmaker

    from test_never_lose import Base, Thing

    owner_url, app_url, app_role = two_roles
    private, public = generate_key_pair(str(tmp_path / "k.pem"))
    Auditor(owner_url).create_all(app_role=app_role)

    app = Auditor(app_url, signing_key=private, seal_grace=dt.timedelta(0))
    Base.metadata.create_all(app.engine)  # the app's own tables, the app's own role
    app.track(Thing)
    Session = app.instrument(sessionmaker(app.engine))
    with Session.begin() as s:  # rides on the COMMIT (CALL of the insert procedure)
        s.add(Thing(id=1, name="a"))
    with Session.begin() as s:  # a flush before the commit, then COPY-sized
        s.add(Thing(id=2, name="b"))
        s.flush()
        s.add_all(Thing(id=i, name="c") for i in range(3, 253))
    app.record("auth.signin.failed")
    put(app, days_ago=40)
    assert app.count(tenant_id=ALL_TENANTS) == 254
    assert app.index_search() >= 0 and app.list(q="signin", tenant_id=ALL_TENANTS).entries
    assert app.seal() is not None and app.verify().ok

    forbidden = [
        "UPDATE whodid_entries SET action = 'x'",
        "DELETE FROM whodid_entries",
        "TRUNCATE whodid_entries",
        "INSERT INTO whodid_purge_window (before) VALUES ('2999-01-01')",
        "SELECT set_config('whodid.purge', 'on', true); DELETE FROM whodid_entries",
        "UPDATE whodid_checkpoints SET count = 0",
        "DELETE FROM whodid_checkpoints",
        "DROP TABLE whodid_entries",
        "ALTER TABLE whodid_entries DISABLE TRIGGER ALL",
        "DROP TRIGGER whodid_entries_no_change ON whodid_entries",
        "CREATE TRIGGER t BEFORE INSERT ON whodid_entries "
        "FOR EACH ROW EXECUTE FUNCTION whodid_reject()",
        "CREATE OR REPLACE FUNCTION whodid_reject() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN RETURN OLD; END $$",
        "DROP FUNCTION whodid_reject() CASCADE",
        "ALTER TABLE whodid_entries OWNER TO CURRENT_USER",
        # Log streams: an entry filed under a passed txid, a stream told to skip ahead.
        "INSERT INTO whodid_entries (id, occurred_at, action, feature, operation, actor_type, "
        "passkey, metadata, digest, txid) VALUES ('log_x', now(), 'a.b', 'a', 'b', 'system', "
        "false, '{}', 'x', 1)",
        "UPDATE whodid_stream_positions SET after_seq = 999999999",
        "INSERT INTO whodid_stream_positions VALUES ('siem', 0, 999999999, 0, 0, now())",
        "DELETE FROM whodid_stream_positions",
    ]
    for sql in forbidden:
        with (
            pytest.raises(sa.exc.DatabaseError, match=r"denied|must be owner"),
            app.engine.begin() as conn,  # type: ignore[union-attr]
        ):
            conn.exec_driver_sql(sql, execution_options={"no_parameters": True})
    with pytest.raises(sa.exc.DatabaseError, match="denied"):
        app.purge(NOW - dt.timedelta(days=30), tenant_id=ALL_TENANTS)
    assert app.count(tenant_id=ALL_TENANTS) == 254

    # Retention runs as the owner, signed, and verify stays clean for the app.
    owner = Auditor(owner_url, signing_key=private)
    assert [p.rows for p in owner.purge(NOW - dt.timedelta(days=30), tenant_id=ALL_TENANTS)] == [1]
    report = Auditor(app_url).verify(public)
    assert report.ok, report.problems
    # The relay runs as the owner (or a role granted the positions table), and
    # ships what the app wrote.
    shipped = tmp_path / "siem.ndjson"
    assert owner.stream(str(shipped)).drain() == owner.count(tenant_id=ALL_TENANTS)


@pytest.mark.postgres
def test_upgrading_narrows_an_old_table_wide_insert_grant(two_roles, tmp_path):
    """whodid before log streams granted INSERT on the whole table: after an upgrade
    the app still writes, but can no longer pick an entry's txid."""
    owner_url, app_url, app_role = two_roles
    owner = Auditor(owner_url)
    owner.create_all(app_role=app_role)
    with owner.engine.begin() as conn:  # type: ignore[union-attr]
        conn.exec_driver_sql(f"GRANT INSERT ON whodid_entries TO {app_role}")  # the old grant
    owner.upgrade()
    app = Auditor(app_url)
    put(app)
    forged = (
        "INSERT INTO whodid_entries (id, occurred_at, action, feature, operation, actor_type, "
        "passkey, metadata, digest, txid) VALUES ('log_x', now(), 'a.b', 'a', 'b', 'system', "
        "false, '{}', 'x', 1)"
    )
    with pytest.raises(sa.exc.DatabaseError, match="denied"), app.engine.begin() as conn:  # type: ignore[union-attr]
        conn.exec_driver_sql(forged, execution_options={"no_parameters": True})
    with owner.stream(str(tmp_path / "out.ndjson")) as relay:
        assert relay.drain() == 1


@pytest.mark.postgres
def test_a_stream_role_ships_the_log_and_changes_nothing_else(two_roles, tmp_path):
    """create_all(stream_role=...): the relay's own role reads entries and keeps positions."""
    owner_url, relay_url, relay_role = two_roles
    owner = Auditor(owner_url)
    owner.create_all(stream_role=relay_role)
    put(owner)
    relay = Auditor(relay_url)
    with relay.stream(str(tmp_path / "siem.ndjson")) as stream:
        assert stream.drain() == 1
    for sql in (
        "UPDATE whodid_entries SET action = 'x'",
        "DELETE FROM whodid_stream_positions",
        "INSERT INTO whodid_checkpoints (number) VALUES (1)",
    ):
        with pytest.raises(sa.exc.DatabaseError, match="denied"), relay.engine.begin() as conn:  # type: ignore[union-attr]
            conn.exec_driver_sql(sql)
    with pytest.raises(sa.exc.DatabaseError, match="denied"):
        put(relay)
