"""The audit table, its indexes, and the triggers that make it append-only.

Everything is attached to :data:`metadata`, so ``metadata.create_all(bind)``
(or :func:`create_all`, e.g. from an Alembic migration with ``op.get_bind()``)
creates the table, the indexes the query API uses, and on SQLite and
PostgreSQL the triggers that reject UPDATE, DELETE and TRUNCATE.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    cast,
    event,
    func,
    literal_column,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.schema import DDL
from sqlalchemy.types import TypeDecorator

from whodid.entry.fields import JSON_COLUMNS
from whodid.errors import ConfigurationError

TABLE = "whodid_entries"
metadata = MetaData()


class _SQLiteJSON(TypeDecorator[Any]):
    """JSON as UTF-8 text on SQLite, not ASCII-escaped, keys sorted.

    SQLAlchemy's JSON writes "Z\\u00fcrich"; free-text search over the stored
    text would then never find "Zürich" (and would find "u00fc"). Sorted keys
    make the text the same canonical JSON the writer stores and the digest
    covers, which lets verify splice it in as it is (see verify_rows.py).
    """

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        if value is None:
            return None
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return None if value is None else json.loads(value)


class _PostgresJSONB(TypeDecorator[Any]):
    """JSONB on PostgreSQL, named without importing the PostgreSQL dialect.

    The dialect is loaded by whoever connects to PostgreSQL; importing it with
    whodid would cost every other app its import time.
    """

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        from sqlalchemy.dialects.postgresql import JSONB

        jsonb: Any = JSONB  # typed from SQLAlchemy 2.1 on, untyped before
        return dialect.type_descriptor(jsonb(none_as_null=True))


# none_as_null: a missing side is SQL NULL, not the JSON text "null".
_json = (
    JSON(none_as_null=True)
    .with_variant(_PostgresJSONB(), "postgresql")
    .with_variant(_SQLiteJSON(), "sqlite")
)

entries = Table(
    TABLE,
    metadata,
    # seq is the insertion order and the key of keyset pagination; BIGINT on
    # PostgreSQL, INTEGER PRIMARY KEY (the rowid) on SQLite.
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("id", String(32), nullable=False, unique=True),
    Column("tenant_id", String(128)),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("action", String(200), nullable=False),
    Column("feature", String(100), nullable=False),
    Column("operation", String(100), nullable=False),
    Column("entity_type", String(200)),
    Column("entity_id", String(400)),
    Column("actor_type", String(16), nullable=False),
    Column("actor_id", String(400)),
    Column("actor_label", String(400)),
    Column("passkey", Boolean(), nullable=False, default=False),
    Column("ip", String(45)),
    Column("country", String(2)),
    Column("user_agent", String(1024)),
    Column("client", _json),
    Column("request_id", String(128)),
    Column("metadata", _json, nullable=False),
    Column("before", _json),
    Column("after", _json),
    Column("digest", String(64), nullable=False),
    # AUTOINCREMENT: a seq is never handed out twice, not even after the
    # newest entries were purged (a reused seq would never be sealed).
    sqlite_autoincrement=True,
)


# One index per question the query API answers, each led by tenant_id so no
# query ever scans another tenant's rows, and ending in the pagination key.
_c = entries.c
Index("ix_whodid_tenant_time", _c.tenant_id, _c.occurred_at, _c.seq)
Index("ix_whodid_entity", _c.tenant_id, _c.entity_id, _c.occurred_at, _c.seq)
Index("ix_whodid_actor", _c.tenant_id, _c.actor_id, _c.occurred_at, _c.seq)
Index("ix_whodid_action", _c.tenant_id, _c.action, _c.occurred_at, _c.seq)
Index("ix_whodid_request", _c.tenant_id, _c.request_id)

CHECKPOINTS = "whodid_checkpoints"
PURGE_WINDOW = "whodid_purge_window"

# Signed checkpoints (seals and purge records), chained by prev_hash; see
# integrity.py for what each field means. Append-only like the entries.
checkpoints = Table(
    CHECKPOINTS,
    metadata,
    Column("number", Integer(), primary_key=True, autoincrement=False),
    Column("kind", String(8), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("hi", BigInteger(), nullable=False),
    Column("count", Integer(), nullable=False),
    Column("root", String(64), nullable=False),
    Column("leaves", LargeBinary(), nullable=False),
    Column("info", _json, nullable=False),  # seal: {"pending": ...}; purge: its horizon
    Column("prev_hash", String(64), nullable=False),
    Column("payload", Text(), nullable=False),
    Column("signature", String(128), nullable=False),
    Column("key_id", String(64), nullable=False),
)

STREAM_POSITIONS = "whodid_stream_positions"

# Where each log stream (whodid.stream) has shipped up to: its own record of
# delivery, so shipping never writes audit entries (which it would then ship).
# On PostgreSQL every entry with txid < low has been shipped, and of those with
# low <= txid < high every one with seq <= after_seq; on SQLite, after_seq alone.
stream_positions = Table(
    STREAM_POSITIONS,
    metadata,
    Column("name", String(200), primary_key=True),
    Column("low", BigInteger(), nullable=False),
    Column("high", BigInteger(), nullable=False),
    Column("after_seq", BigInteger(), nullable=False),
    Column("shipped", BigInteger(), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# The one door out of the entries table. A purge writes its horizon here,
# deletes what is older, and removes the row again, all in one transaction;
# the delete trigger lets through only rows older than a horizon listed here.
purge_window = Table(
    PURGE_WINDOW,
    metadata,
    Column("id", Integer(), primary_key=True),
    Column("before", DateTime(timezone=True), nullable=False),
    Column("tenant_id", String(128)),
)

APPEND_ONLY_MESSAGE = (
    "is append-only: audit entries and checkpoints are write-once and cannot be "
    "updated or deleted (retention goes through Auditor.purge / whodid purge)"
)
_PURGEABLE = f"""EXISTS (SELECT 1 FROM {PURGE_WINDOW} w WHERE OLD.occurred_at < w.before
    AND (w.tenant_id IS NULL OR w.tenant_id = OLD.tenant_id))"""

#: The SQL function the SQLite delete trigger asks whether a row may go. whodid
#: registers it on its own purge connection only, for the length of one purge;
#: on any other connection the function does not exist and the DELETE fails.
SQLITE_PURGE_FUNCTION = "whodid_purging"


def _sqlite_guards(table: str, key: str, deletable: bool) -> list[str]:
    """UPDATE, DELETE and REPLACE guards of an append-only SQLite table.

    REPLACE (and INSERT OR REPLACE) removes the row it collides with without
    firing DELETE triggers, so an INSERT that would collide is refused first.
    """
    reject = f"SELECT RAISE(ABORT, '%s rejected: {table} {APPEND_ONLY_MESSAGE}')"
    delete_when = (
        f"WHEN NOT {SQLITE_PURGE_FUNCTION}(OLD.occurred_at, OLD.tenant_id)" if deletable else ""
    )
    collides = f"EXISTS (SELECT 1 FROM {table} WHERE {key} = NEW.{key})"
    if table == TABLE:
        collides += f" OR EXISTS (SELECT 1 FROM {table} WHERE id = NEW.id)"
    return [
        f"""CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table}
            BEGIN {reject % "UPDATE"}; END""",
        f"""CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table}
            {delete_when} BEGIN {reject % "DELETE"}; END""",
        f"""CREATE TRIGGER IF NOT EXISTS {table}_no_replace BEFORE INSERT ON {table}
            WHEN {collides} BEGIN {reject % "REPLACE"}; END""",
    ]


def refuse_purge(occurred: Any, tenant: Any) -> int:
    """The SQLite purge function outside a purge: no row may go."""
    return 0


def guard_sqlite(engine: Engine) -> None:
    """Give every connection of ``engine`` the purge function that refuses.

    The DELETE guard then fails with its own "append-only" message rather
    than "no such function" (which rejects the DELETE just as well).
    """
    if engine.dialect.name != "sqlite" or event.contains(engine, "connect", _on_connect):
        return
    event.listen(engine, "connect", _on_connect)


def _on_connect(dbapi_connection: Any, record: Any) -> None:
    dbapi_connection.create_function(SQLITE_PURGE_FUNCTION, 2, refuse_purge)


_SQLITE_TRIGGERS = _sqlite_guards(TABLE, "seq", deletable=True)
_SQLITE_CHECKPOINT_TRIGGERS = _sqlite_guards(CHECKPOINTS, "number", deletable=False)

# A DELETE of entries passes only inside Auditor.purge: a purge window row
# covers it, the transaction said SET LOCAL whodid.purge = 'on', and the role
# deleting is (a member of) the table's owner. Plain DML of the application's
# role satisfies none of the last two; see SECURITY.md for the owner.
_POSTGRES_FUNCTION = f"""CREATE OR REPLACE FUNCTION whodid_reject() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' AND TG_TABLE_NAME LIKE '{TABLE}%%'
            AND current_setting('whodid.purge', true) = 'on'
            AND pg_has_role(current_user,
                (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE')
            AND {_PURGEABLE} THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION '%% rejected: %% {APPEND_ONLY_MESSAGE}', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END $$"""


def _postgres_triggers(table: str) -> list[str]:
    return [
        _POSTGRES_FUNCTION,
        f"DROP TRIGGER IF EXISTS {table}_no_change ON {table}",
        f"""CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION whodid_reject()""",
        # Row triggers never see TRUNCATE; it needs its own statement trigger.
        f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION whodid_reject()""",
    ]


_POSTGRES_TRIGGERS = _postgres_triggers(TABLE)

SEARCHED = (
    "actor_id",
    "actor_label",
    "ip",
    "request_id",
    "user_agent",
    "entity_type",
    "entity_id",
    "action",
    "metadata",
    "before",
    "after",
)


def search_text(table: Any = entries) -> Any:
    """Every detail field as one lower-case text: what the ``q`` filter searches."""
    empty: Any = literal_column("''")
    space: Any = literal_column("' '")
    joined: Any = None
    for name in SEARCHED:
        column: Any = table.c[name]
        part = func.coalesce(cast(column, Text) if name in JSON_COLUMNS else column, empty)
        joined = part if joined is None else joined.op("||")(space).op("||")(part)
    return func.lower(joined, type_=Text)


# Free-text search on PostgreSQL. A trigram index over the entries themselves
# would put its upkeep on every audited write (benchmarks/PROFILES.md), so the
# searchable text lives in its own table, indexed off the write path: a
# statement trigger queues the seq range each INSERT (or COPY) added, and
# search.index_pending() moves queued entries into whodid_search. Queries
# search the indexed table plus whatever is still queued, so q finds an entry
# from the moment it commits.
SEARCH = "whodid_search"
# Stored as the search table's comment; a log indexed under another version
# (other fields in SEARCHED) is indexed again by create_all.
SEARCH_VERSION = "whodid search text v2: before and after included"
SEARCH_QUEUE = "whodid_search_queue"
search_metadata = MetaData()  # created on PostgreSQL only, by the DDL below
search_table = Table(
    SEARCH,
    search_metadata,
    Column("seq", BigInteger(), primary_key=True, autoincrement=False),
    Column("text", Text(), nullable=False),
)
search_queue = Table(
    SEARCH_QUEUE,
    search_metadata,
    Column("lo", BigInteger(), nullable=False),
    Column("hi", BigInteger(), nullable=False),
)

# pg_trgm is a trusted extension, but a role may still lack CREATE on the
# database; then search works, by scanning, and a notice says why.
_POSTGRES_SEARCH = [
    """DO $$ BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'whodid: no pg_trgm (needs CREATE on the database); q will scan';
    END $$""",
    f"CREATE TABLE IF NOT EXISTS {SEARCH} (seq BIGINT PRIMARY KEY, text TEXT NOT NULL)",
    f"COMMENT ON TABLE {SEARCH} IS '{SEARCH_VERSION}'",
    f"CREATE TABLE IF NOT EXISTS {SEARCH_QUEUE} (lo BIGINT NOT NULL, hi BIGINT NOT NULL)",
    f"ANALYZE {SEARCH_QUEUE}",  # known empty, not guessed at thousands of rows (search.py)
    f"""CREATE OR REPLACE FUNCTION whodid_queue_search() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {SEARCH_QUEUE} (lo, hi)
                SELECT min(seq), max(seq) FROM whodid_new HAVING count(*) > 0;
            RETURN NULL;
        END $$""",
    f"DROP TRIGGER IF EXISTS {TABLE}_search ON {TABLE}",
    # One row per statement, whatever its size: a COPY of a million entries
    # queues one range.
    f"""CREATE TRIGGER {TABLE}_search AFTER INSERT ON {TABLE}
        REFERENCING NEW TABLE AS whodid_new
        FOR EACH STATEMENT EXECUTE FUNCTION whodid_queue_search()""",
    f"""DO $$ BEGIN
        IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
            CREATE INDEX IF NOT EXISTS ix_whodid_search ON {SEARCH}
                USING gin (text gin_trgm_ops);
        END IF;
    END $$""",
]

# The entries of a commit's flush go to PostgreSQL as CALLs of this procedure
# (drivers/send_with_commit.py): its INSERT is planned once per connection,
# where an INSERT sent as text is parsed and planned on every commit. A schema object rather than a
# PREPAREd statement, so it also works behind a transaction-pooling proxy.
# Its name carries a version: a change of columns gets a new procedure.
INSERT_PROCEDURE = "whodid_insert_entry_v1"

# The id of the transaction that wrote each entry, for log streams: an entry is
# shipped once every transaction older than its own has ended (the snapshot's
# xmin), so one committing late is never skipped. A column only PostgreSQL has
# and no write path names: its default fills it, whatever inserts the row.
# Nullable, so adding it to a large existing log rewrites nothing; entries
# written before it existed go out in the first window. BRIN, because txids
# grow with the table: the index costs the writers next to nothing.
TXID = "txid"
_POSTGRES_TXID = [
    f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS {TXID} bigint",
    f"ALTER TABLE {TABLE} ALTER COLUMN {TXID} SET DEFAULT (pg_current_xact_id()::text::bigint)",
    f"CREATE INDEX IF NOT EXISTS ix_whodid_txid ON {TABLE} USING brin ({TXID})",
]


def _ensure_txid(conn: Connection) -> None:
    for sql in _POSTGRES_TXID:
        conn.exec_driver_sql(sql)
    # A table-wide INSERT grant (what whodid gave the app role before txid existed)
    # covers the new column too: narrow it to the columns whodid writes.
    grantees = conn.exec_driver_sql(
        "SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' "
        "ELSE pg_get_userbyid(a.grantee) END FROM pg_class c, aclexplode(c.relacl) a "
        f"WHERE c.oid = '{TABLE}'::regclass AND a.privilege_type = 'INSERT' "
        "AND a.grantee <> c.relowner"
    ).scalars()
    for grantee in list(grantees):
        _grant_insert(conn, grantee)


def _grant_insert(conn: Connection, grantee: str) -> None:
    """INSERT on every entry column but txid (the app cannot pick a passed txid)."""
    who = grantee if grantee == "PUBLIC" else conn.dialect.identifier_preparer.quote(grantee)
    columns = ", ".join(c.name for c in entries.columns)
    conn.exec_driver_sql(f"REVOKE INSERT ON {TABLE} FROM {who}")
    conn.exec_driver_sql(f"GRANT INSERT ({columns}) ON {TABLE} TO {who}")


def _insert_procedure(dialect: Any) -> str:
    columns = [c for c in entries.columns if c.name != "seq"]
    params = ", ".join(f"p_{c.name} {c.type.compile(dialect=dialect)}" for c in columns)
    names = ", ".join(c.name for c in columns)
    values = ", ".join(f"p_{c.name}" for c in columns)
    return f"""CREATE OR REPLACE PROCEDURE {INSERT_PROCEDURE}({params})
        LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {TABLE} ({names}) VALUES ({values});
        END $$"""


def _create_procedure(target: Any, connection: Connection, **kw: Any) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(DDL(_insert_procedure(connection.dialect)))  # type: ignore[no-untyped-call]


for _sql in _SQLITE_CHECKPOINT_TRIGGERS:
    event.listen(checkpoints, "after_create", DDL(_sql).execute_if(dialect="sqlite"))  # type: ignore[no-untyped-call]
for _sql in _postgres_triggers(CHECKPOINTS):
    event.listen(checkpoints, "after_create", DDL(_sql).execute_if(dialect="postgresql"))  # type: ignore[no-untyped-call]
for _sql in _SQLITE_TRIGGERS:
    event.listen(entries, "after_create", DDL(_sql).execute_if(dialect="sqlite"))  # type: ignore[no-untyped-call]
for _sql in _POSTGRES_TRIGGERS + _POSTGRES_SEARCH + _POSTGRES_TXID:
    # DDL() formats its text with %, hence the %% for plpgsql placeholders.
    event.listen(entries, "after_create", DDL(_sql).execute_if(dialect="postgresql"))  # type: ignore[no-untyped-call]
event.listen(entries, "after_create", _create_procedure)


def create_all(
    bind: Engine | Connection, app_role: str | None = None, stream_role: str | None = None
) -> None:
    """Create the audit table, indexes and triggers where missing (idempotent).

    On PostgreSQL this also adds the search table and the insert procedure
    to a log created before they existed, and with ``app_role`` grants that
    role only what writing entries needs (see :func:`grant_writer`).
    """
    if (app_role or stream_role) is not None and bind.dialect.name != "postgresql":
        raise ConfigurationError(
            f"app_role= and stream_role= need PostgreSQL; {bind.dialect.name} has no roles"
        )
    metadata.create_all(bind)
    if bind.dialect.name != "postgresql":
        return
    with begin(bind) as conn:
        _ensure_search(conn)
        _ensure_procedure(conn)
        _ensure_txid(conn)
        if app_role is not None:
            grant_writer(conn, app_role)
        if stream_role is not None:
            grant_streamer(conn, stream_role)


@contextlib.contextmanager
def begin(bind: Engine | Connection) -> Iterator[Connection]:
    """A transaction on ``bind``, or ``bind`` itself if it is already a connection."""
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            yield conn
    else:
        yield bind


def grant_writer(conn: Connection, role: str) -> None:
    """Give ``role`` (the application's) what writing entries needs, and nothing more.

    Run by the owner of the audit tables. The role may read and append entries
    and checkpoints, use the seq sequence and the insert procedure, and keep the
    search index; it may not update, delete or truncate anything, open the purge
    window, set an entry's txid, move a log stream's position, or change the
    tables (no ownership, no TRIGGER privilege).
    """
    quote = conn.dialect.identifier_preparer.quote
    who = quote(role)
    sequence = conn.exec_driver_sql(f"SELECT pg_get_serial_sequence('{TABLE}', 'seq')").scalar_one()
    for sql in (
        f"REVOKE ALL ON {TABLE}, {CHECKPOINTS}, {PURGE_WINDOW}, {SEARCH}, {SEARCH_QUEUE}, "
        f"{STREAM_POSITIONS} FROM {who}",
        f"GRANT SELECT ON {TABLE} TO {who}",
        f"GRANT SELECT, INSERT ON {CHECKPOINTS} TO {who}",
        f"GRANT USAGE ON SEQUENCE {sequence} TO {who}",
        f"GRANT EXECUTE ON PROCEDURE {INSERT_PROCEDURE} TO {who}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {SEARCH}, {SEARCH_QUEUE} TO {who}",
    ):
        conn.exec_driver_sql(sql)
    _grant_insert(conn, role)


def grant_streamer(conn: Connection, role: str) -> None:
    """Give ``role`` (log stream relays') what shipping needs: reading entries and
    keeping the streams' positions. It can change no entry or checkpoint."""
    who = conn.dialect.identifier_preparer.quote(role)
    conn.exec_driver_sql(f"GRANT SELECT ON {TABLE} TO {who}")
    conn.exec_driver_sql(f"GRANT SELECT, INSERT, UPDATE ON {STREAM_POSITIONS} TO {who}")


def upgrade(conn: Connection) -> list[str]:
    """Bring a log made by an earlier whodid up to this one's schema; what it did.

    Keeps every entry with its seq and digest, so ``verify`` stays clean. On
    SQLite the entries table is rebuilt with AUTOINCREMENT (seqs are never
    reused) and every guard trigger is made anew; on PostgreSQL the guard
    function and triggers are replaced and the search table and insert
    procedure added where missing. Idempotent.
    """
    done: list[str] = []
    inspector = sa_inspect(conn)
    if not inspector.has_table(TABLE):
        raise ConfigurationError(f"no audit log here: no {TABLE} table (create_all makes one)")
    metadata.create_all(conn)  # tables added since (checkpoints, purge window)
    if conn.dialect.name == "sqlite":
        for table in (TABLE, CHECKPOINTS):
            for name in ("no_update", "no_delete", "no_replace"):
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_{name}")
        created = conn.exec_driver_sql(
            f"SELECT sql FROM sqlite_master WHERE type = 'table' AND name = '{TABLE}'"
        ).scalar_one()
        if "AUTOINCREMENT" not in created.upper():
            _rebuild_sqlite(conn)
            done.append(f"rebuilt {TABLE} with AUTOINCREMENT, every seq and digest kept")
        for sql in _SQLITE_TRIGGERS + _SQLITE_CHECKPOINT_TRIGGERS:
            conn.exec_driver_sql(sql)
        done.append("replaced the UPDATE, DELETE and REPLACE guards")
    elif conn.dialect.name == "postgresql":
        # Partitions' own TRUNCATE guards call the same (replaced) function.
        for table in (TABLE, CHECKPOINTS):
            for sql in _postgres_triggers(table):
                conn.execute(DDL(sql))  # type: ignore[no-untyped-call]
        _ensure_search(conn)
        _ensure_procedure(conn)
        _ensure_txid(conn)
        done.append("replaced the guard function and triggers")
    return done


def _rebuild_sqlite(conn: Connection) -> None:
    old = f"{TABLE}_before_upgrade"
    for index in entries.indexes:
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {index.name}")
    conn.exec_driver_sql(f"ALTER TABLE {TABLE} RENAME TO {old}")
    entries.create(conn)
    names = ", ".join(c.name for c in entries.columns)
    conn.exec_driver_sql(f"INSERT INTO {TABLE} ({names}) SELECT {names} FROM {old} ORDER BY seq")
    conn.exec_driver_sql(f"DROP TABLE {old}")
    # Seqs of entries purged before the upgrade stay used: the checkpoints say how far.
    top = conn.exec_driver_sql(
        f"SELECT max(coalesce((SELECT max(seq) FROM {TABLE}), 0), "
        f"coalesce((SELECT max(hi) FROM {CHECKPOINTS}), 0))"
    ).scalar_one()
    conn.exec_driver_sql(f"DELETE FROM sqlite_sequence WHERE name = '{TABLE}'")
    conn.exec_driver_sql(
        f"INSERT INTO sqlite_sequence (name, seq) VALUES ('{TABLE}', ?)", (int(top),)
    )


#: Whether the insert procedure is there for this connection's search_path.
PROCEDURE_EXISTS = (
    f"SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = '{INSERT_PROCEDURE}' "
    "AND prokind = 'p' AND pg_function_is_visible(oid))"
)


def _ensure_procedure(conn: Connection) -> None:
    if not conn.exec_driver_sql(PROCEDURE_EXISTS).scalar():
        _create_procedure(entries, conn)


def _ensure_search(conn: Connection) -> None:
    if sa_inspect(conn).has_table(SEARCH):
        version = conn.exec_driver_sql(
            f"SELECT obj_description('{SEARCH}'::regclass, 'pg_class')"
        ).scalar()
        if version == SEARCH_VERSION:
            return
        # Text made under another version misses fields q now searches.
        conn.exec_driver_sql(f"TRUNCATE {SEARCH}, {SEARCH_QUEUE}")
    for sql in _POSTGRES_SEARCH:
        conn.execute(DDL(sql))  # type: ignore[no-untyped-call]
    # Queue what the log already holds, so q keeps finding all of it.
    conn.exec_driver_sql(
        f"INSERT INTO {SEARCH_QUEUE} (lo, hi) SELECT min(seq), max(seq) FROM {TABLE} "
        "HAVING count(*) > 0"
    )
