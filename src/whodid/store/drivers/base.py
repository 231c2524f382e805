"""The reference driver, and what every driver shares.

:class:`Driver` writes entries through SQLAlchemy Core's INSERT and leaves
exports to the Python writer: the reference every faster driver must match
byte for byte (``tests/test_drivers.py``). :class:`PreparedInsertDriver` sends
a ready-made multi-row INSERT with the JSON already in canonical text, through
the DBAPI cursor when nothing watches the connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import IO, Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from whodid.entry.fields import JSON_COLUMNS, canonical_json
from whodid.store.schema import entries

#: Key under which a row from Writer.rows carries its JSON fields as stored text.
ENCODED = "_encoded"
#: The columns a driver writes, in order (seq is the database's).
COLUMNS = [c.name for c in entries.columns if c.name != "seq"]
_JSON_AT = [i for i, name in enumerate(COLUMNS) if name in JSON_COLUMNS]
_OCCURRED_AT = COLUMNS.index("occurred_at")
_INSERT = entries.insert()

Progress = Callable[[int], None] | None
#: The Python CSV writer (:func:`whodid.export.formats.lines`), handed to a driver for
#: the rows its own SQL cannot write: the store never imports the export surface.
LineWriter = Callable[[Iterable[Sequence[Any]], Any], Iterator[str]]


def row_values(row: Mapping[str, Any], sqlite: bool = False) -> list[Any]:
    """The row in :data:`COLUMNS` order, JSON columns as their canonical text."""
    values = [row[name] for name in COLUMNS]
    encoded = row.get(ENCODED)
    for i in _JSON_AT:
        if encoded is not None:
            values[i] = encoded[COLUMNS[i]]
        elif values[i] is not None:
            values[i] = canonical_json(values[i])
    if sqlite:
        # The text SQLAlchemy's DateTime stores on SQLite (naive UTC).
        values[_OCCURRED_AT] = (
            values[_OCCURRED_AT].replace(tzinfo=None).isoformat(" ", "microseconds")
        )
    return values


class Driver:
    """SQLAlchemy Core for everything: any database SQLAlchemy speaks."""

    name = "generic"

    def insert(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows`` (from Writer.rows) on ``connection``, in its transaction."""
        connection.execute(_INSERT, [{k: v for k, v in r.items() if k != ENCODED} for r in rows])

    def hold_for_commit(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> bool:
        """Keep ``rows`` to send with ``connection``'s COMMIT; False: insert them now."""
        return False

    def write_held(self, connection: Connection) -> None:
        """Insert now whatever is held for ``connection``."""

    def drop_held(self, connection: Connection) -> None:
        """Forget whatever is held for ``connection`` (its transaction rolled back)."""

    def export_csv(
        self,
        conn: Connection,
        where: Sequence[Any],
        fileobj: IO[Any],
        progress: Progress,
        lines: LineWriter,
    ) -> int | None:
        """Write the CSV export of the rows ``where`` selects, in ``lines``' bytes;
        None: nothing written, use the Python writer."""
        return None


# Placeholders of the drivers whose INSERT whodid renders itself.
_PLACEHOLDERS: dict[str, Callable[[int], str]] = {
    "qmark": lambda i: "?",
    "format": lambda i: "%s",
    "pyformat": lambda i: "%s",
    "numeric": lambda i: f":{i}",
    "numeric_dollar": lambda i: f"${i}",
}
_statements: dict[tuple[str, int], str] = {}
# Rows per statement: well under every driver's limit on parameters (32,766).
CHUNK = 100


def insert_sql(paramstyle: str, count: int) -> str:
    """``INSERT INTO whodid_entries (...) VALUES (...), ...`` for ``count`` rows."""
    key = (paramstyle, count)
    sql = _statements.get(key)
    if sql is None:
        mark = _PLACEHOLDERS[paramstyle]
        width = len(COLUMNS)
        groups = (
            "(" + ", ".join(mark(r * width + i + 1) for i in range(width)) + ")"
            for r in range(count)
        )
        sql = f"INSERT INTO {entries.name} ({', '.join(COLUMNS)}) VALUES {', '.join(groups)}"
        if count <= 16 or count == CHUNK:  # the common sizes
            _statements[key] = sql
    return sql


def unobserved(connection: Connection) -> bool:
    """True if nothing watches ``connection``'s statements: no engine or
    connection event listeners and no echo. Then the DBAPI cursor does exactly
    what ``exec_driver_sql`` would; anything listening (logging, tracing, a
    ``handle_error`` hook) gets ``exec_driver_sql``, so it sees the INSERT.
    Unknown attributes (another SQLAlchemy) count as watched."""
    return not (
        getattr(connection, "_echo", True)
        or getattr(connection, "_has_events", True)
        or getattr(connection.engine, "_has_events", True)
    )


def execute_raw(connection: Connection, statements: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
    """Run ``statements`` on the DBAPI cursor, raising SQLAlchemy's errors as Core would."""
    dbapi_error = connection.dialect.loaded_dbapi.Error
    cursor: Any = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    sql, parameters = "", ()
    try:
        for sql, parameters in statements:
            cursor.execute(sql, parameters)
    except dbapi_error as error:
        raise DBAPIError.instance(
            sql,
            parameters,
            error,
            dbapi_error,
            hide_parameters=connection.engine.hide_parameters,
            dialect=connection.dialect,
        ) from error
    finally:
        cursor.close()


class PreparedInsertDriver(Driver):
    """A ready-made INSERT with the JSON already in canonical text: Core's
    compile-cache lookup and bind processing cost about as much as the
    database's own work for one row."""

    name = "prepared-insert"
    sqlite = False

    def insert(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        paramstyle = connection.dialect.paramstyle
        statements = []
        for at in range(0, len(rows), CHUNK):
            chunk = rows[at : at + CHUNK]
            params: list[Any] = []
            for row in chunk:
                params += row_values(row, self.sqlite)
            statements.append((insert_sql(paramstyle, len(chunk)), tuple(params)))
        # The raw cursor skips SQLAlchemy's autobegin: only inside a
        # transaction the Connection already knows of.
        if unobserved(connection) and connection.in_transaction():
            execute_raw(connection, statements)
        else:
            for sql, parameters in statements:
                connection.exec_driver_sql(sql, parameters)

    @staticmethod
    def handles(paramstyle: str) -> bool:
        return paramstyle in _PLACEHOLDERS
