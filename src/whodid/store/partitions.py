"""Monthly partitions of the audit table on PostgreSQL, for large logs.

With the table partitioned by ``occurred_at``, retention drops whole months
(after signing what they held) instead of deleting rows one by one, which on a
large log is slow and leaves the table bloated. Rows outside every monthly
partition land in a default partition, so an insert never fails for want of
one; create months ahead with :func:`add_partitions` (``create_all`` makes the
current month and three ahead; run it monthly, e.g. next to sealing).
"""

from __future__ import annotations

import datetime as dt
import re

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.schema import DDL, CreateTable

from whodid.errors import ConfigurationError
from whodid.store.schema import (
    _POSTGRES_SEARCH,
    _POSTGRES_TXID,
    TABLE,
    _create_procedure,
    _postgres_triggers,
    entries,
    metadata,
)

DEFAULT = f"{TABLE}_default"
_NAME = re.compile(rf"^{TABLE}_p(\d{{4}})(\d{{2}})$")


def _month(year: int, month: int) -> dt.datetime:
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return dt.datetime(year, month, 1, tzinfo=dt.UTC)


def is_partitioned(conn: Connection) -> bool:
    if conn.dialect.name != "postgresql":
        return False
    found = conn.execute(
        sa.text(
            "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
            "WHERE c.relname = :t AND pg_table_is_visible(c.oid)"
        ),
        {"t": TABLE},
    ).first()
    return found is not None


def create_partitioned(conn: Connection, months_ahead: int = 3) -> None:
    """Create the audit table partitioned by month, with everything create_all makes."""
    if conn.dialect.name != "postgresql":
        raise ConfigurationError("partitioned=True needs PostgreSQL; SQLite has no partitions")
    exists = sa.inspect(conn).has_table(TABLE)
    if exists and not is_partitioned(conn):
        raise ConfigurationError(
            f"{TABLE} already exists unpartitioned; partitioning it means copying the rows "
            "into a new table (see docs/integrity.md)"
        )
    if not exists:
        ddl = str(CreateTable(entries).compile(dialect=conn.dialect)).strip()
        # A partitioned table's keys must include the partition column.
        ddl = ddl.replace("PRIMARY KEY (seq)", "PRIMARY KEY (seq, occurred_at)")
        ddl = ddl.replace("UNIQUE (id)", "UNIQUE (id, occurred_at)")
        conn.exec_driver_sql(ddl + " PARTITION BY RANGE (occurred_at)")
        conn.exec_driver_sql(f"CREATE TABLE {DEFAULT} PARTITION OF {TABLE} DEFAULT")
        for index in entries.indexes:
            index.create(conn, checkfirst=True)
        for sql in [*_postgres_triggers(TABLE), *_POSTGRES_SEARCH, *_POSTGRES_TXID]:
            conn.execute(DDL(sql))  # type: ignore[no-untyped-call]
        _create_procedure(entries, conn)
        _protect(conn, DEFAULT)
    metadata.create_all(conn)  # checkpoints and the purge window
    add_partitions(conn, months_ahead=months_ahead)


def _protect(conn: Connection, partition: str) -> None:
    # Row triggers are cloned onto partitions, statement triggers are not: a
    # TRUNCATE aimed at one partition needs its own guard.
    conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {partition}_no_truncate ON {partition}")
    conn.exec_driver_sql(
        f"CREATE TRIGGER {partition}_no_truncate BEFORE TRUNCATE ON {partition} "
        "FOR EACH STATEMENT EXECUTE FUNCTION whodid_reject()"
    )


def add_partitions(
    conn: Connection, months_ahead: int = 3, start: dt.date | None = None
) -> list[str]:
    """Create the monthly partitions from ``start`` (default: this month) on; idempotent."""
    start = start or dt.datetime.now(dt.UTC).date()
    made = []
    for i in range(months_ahead + 1):
        lo, hi = _month(start.year, start.month + i), _month(start.year, start.month + i + 1)
        name = f"{TABLE}_p{lo:%Y%m}"
        if sa.inspect(conn).has_table(name):
            continue
        conn.exec_driver_sql(
            f"CREATE TABLE {name} PARTITION OF {TABLE} "
            f"FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')"
        )
        _protect(conn, name)
        made.append(name)
    return made


def expired_partitions(conn: Connection, before: dt.datetime) -> list[str]:
    """Monthly partitions whose whole range lies before ``before``, oldest first."""
    names = (
        conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :t ORDER BY c.relname"
            ),
            {"t": TABLE},
        )
        .scalars()
        .all()
    )
    expired = []
    for name in names:
        match = _NAME.match(name)
        if match and _month(int(match[1]), int(match[2]) + 1) <= before:
            expired.append(name)
    return expired


def drop_partition(conn: Connection, name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a whodid monthly partition")
    conn.exec_driver_sql(f"ALTER TABLE {TABLE} DETACH PARTITION {name}")
    conn.exec_driver_sql(f"DROP TABLE {name}")
