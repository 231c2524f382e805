"""The audit table, its indexes, and the triggers that make it append-only.

Everything is attached to :data:`metadata`, so ``metadata.create_all(bind)``
(or :func:`create_all`, e.g. from an Alembic migration with ``op.get_bind()``)
creates the table, the indexes the query API uses, and on SQLite and
PostgreSQL the triggers that reject UPDATE, DELETE and TRUNCATE.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    event,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.schema import DDL

TABLE = "whodid_entries"
metadata = MetaData()

_json = JSON().with_variant(JSONB(), "postgresql")

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
)

# One index per question the query API answers, each led by tenant_id so no
# query ever scans another tenant's rows, and ending in the pagination key.
Index("ix_whodid_tenant_time", entries.c.tenant_id, entries.c.occurred_at, entries.c.seq)
Index("ix_whodid_entity", entries.c.tenant_id, entries.c.entity_type, entries.c.entity_id)
Index("ix_whodid_actor", entries.c.tenant_id, entries.c.actor_id, entries.c.seq)
Index("ix_whodid_request", entries.c.tenant_id, entries.c.request_id)
Index("ix_whodid_action", entries.c.tenant_id, entries.c.action, entries.c.seq)

APPEND_ONLY_MESSAGE = (
    f"{TABLE} is append-only: audit entries are write-once and cannot be "
    "updated or deleted (retention goes through Auditor.purge / whodid purge)"
)

_SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_no_update BEFORE UPDATE ON {TABLE}
        BEGIN SELECT RAISE(ABORT, 'UPDATE rejected: {APPEND_ONLY_MESSAGE}'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_no_delete BEFORE DELETE ON {TABLE}
        BEGIN SELECT RAISE(ABORT, 'DELETE rejected: {APPEND_ONLY_MESSAGE}'); END""",
]

_POSTGRES_TRIGGERS = [
    f"""CREATE OR REPLACE FUNCTION {TABLE}_reject() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '%% rejected: {APPEND_ONLY_MESSAGE}', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$""",
    f"DROP TRIGGER IF EXISTS {TABLE}_no_change ON {TABLE}",
    f"""CREATE TRIGGER {TABLE}_no_change BEFORE UPDATE OR DELETE ON {TABLE}
        FOR EACH ROW EXECUTE FUNCTION {TABLE}_reject()""",
    # Row triggers never see TRUNCATE; it needs its own statement trigger.
    f"DROP TRIGGER IF EXISTS {TABLE}_no_truncate ON {TABLE}",
    f"""CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE}
        FOR EACH STATEMENT EXECUTE FUNCTION {TABLE}_reject()""",
]

# DDL's constructor is not annotated upstream.
for _sql in _SQLITE_TRIGGERS:
    event.listen(entries, "after_create", DDL(_sql).execute_if(dialect="sqlite"))  # type: ignore[no-untyped-call]
for _sql in _POSTGRES_TRIGGERS:
    # DDL() formats its text with %, hence the %% for plpgsql placeholders.
    event.listen(entries, "after_create", DDL(_sql).execute_if(dialect="postgresql"))  # type: ignore[no-untyped-call]


def create_all(bind: Engine | Connection) -> None:
    """Create the audit table, indexes and triggers where missing (idempotent)."""
    metadata.create_all(bind)
