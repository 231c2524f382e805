"""PostgreSQL: the ready-made INSERT for any driver; with psycopg, COPY both ways
and the entries of a commit's flush sent with the COMMIT (see send_with_commit.py)."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from whodid.entry.cells import FORMULA_START, OCCURRED, PASSKEY, TEXT
from whodid.entry.fields import COLUMNS as EXPORT_COLUMNS
from whodid.entry.fields import JSON_COLUMNS
from whodid.store.drivers.base import (
    COLUMNS,
    LineWriter,
    PreparedInsertDriver,
    Progress,
    row_values,
)
from whodid.store.drivers.send_with_commit import CommitSender
from whodid.store.schema import entries

#: From this many entries in one flush, COPY beats multi-row INSERTs several
#: times over (bulk imports, 10,000-row flushes).
COPY_THRESHOLD = 200


class PostgresDriver(PreparedInsertDriver):
    """Any PostgreSQL DBAPI (asyncpg, psycopg2, ...): the ready-made INSERT."""

    name = "postgresql"


class PsycopgDriver(PostgresDriver):
    """psycopg 3: COPY for large flushes and exports, and riding on the COMMIT."""

    name = "psycopg"

    def __init__(self) -> None:
        self.sender = CommitSender(COLUMNS, row_values)

    def insert(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        if len(rows) < COPY_THRESHOLD:
            super().insert(connection, rows)
            return
        # On the flush's own connection, so in its transaction.
        raw: Any = connection.connection.dbapi_connection
        with (
            raw.cursor() as cursor,
            cursor.copy(f"COPY {entries.name} ({', '.join(COLUMNS)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row_values(row))

    def hold_for_commit(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> bool:
        return (
            bool(rows) and self.sender.eligible(connection) and self.sender.hold(connection, rows)
        )

    def write_held(self, connection: Connection) -> None:
        self.sender.write_held(connection)

    def drop_held(self, connection: Connection) -> None:
        self.sender.drop(connection)

    def export_csv(
        self,
        conn: Connection,
        where: Sequence[Any],
        fileobj: IO[Any],
        progress: Progress,
        lines: LineWriter,
    ) -> int | None:
        return copy_csv(conn, where, fileobj, progress)


def copy_csv(
    conn: Any,
    where: Sequence[Any],
    fileobj: IO[str] | IO[bytes],
    progress: Callable[[int], None] | None = None,
) -> int:
    """The CSV export done by PostgreSQL itself (``COPY ... TO STDOUT``).

    The same columns, formats and formula guard as :func:`lines`, written in
    SQL, so rows never pass through Python one by one: several times faster.
    """
    c = entries.c
    guard = FORMULA_START
    columns: list[Any] = []
    for i, name in enumerate(EXPORT_COLUMNS):
        col: Any = c[name]
        if i == OCCURRED:
            expr: Any = sa.func.to_char(
                sa.func.timezone("UTC", col), sa.literal_column('\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\'')
            )
        elif i == PASSKEY:
            expr = sa.case((col, sa.literal_column("'true'")), else_=sa.literal_column("'false'"))
        elif name in JSON_COLUMNS:
            expr = sa.cast(col, sa.Text)
        elif i in TEXT:
            col = sa.func.regexp_replace(
                col,
                sa.literal_column(r"E'([\\r\\n])([=+@\\t-])'"),
                sa.literal_column(r"E'\\1''\\2'"),
                sa.literal_column("'g'"),
            )
            first = sa.func.left(col, 1)
            expr = sa.case(
                (
                    first.in_([sa.literal_column(f"E'{_pg_escape(ch)}'") for ch in guard]),
                    sa.literal_column("''''").op("||")(col),
                ),
                else_=col,
            )
            # COPY quotes a non-NULL empty string as ""; csv writes an empty cell.
            expr = sa.func.nullif(expr, sa.literal_column("''"))
        else:
            expr = col
        columns.append(expr.label(name))
    stmt = sa.select(*columns).where(*where).order_by(c.occurred_at, c.seq)
    compiled = stmt.compile(dialect=conn.dialect)
    raw = conn.connection.dbapi_connection
    binary = not isinstance(fileobj, io.TextIOBase)
    count = 0
    with raw.cursor() as cursor:
        sql = f"COPY ({compiled}) TO STDOUT WITH (FORMAT csv, HEADER true)"
        with cursor.copy(sql, compiled.params) as copy:
            for block in copy:
                data = bytes(block)
                rows = data.count(b"\n")
                count += rows
                if progress is not None:
                    progress(rows)
                fileobj.write(data if binary else data.decode("utf-8"))  # type: ignore[arg-type]
        total = cursor.rowcount
    return total if total >= 0 else max(count - 1, 0)


def _pg_escape(ch: str) -> str:
    return {"\t": "\\t", "\r": "\\r", "\n": "\\n"}.get(ch, ch)
