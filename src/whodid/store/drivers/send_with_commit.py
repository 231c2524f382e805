"""Entries of a commit's own flush, sent with the COMMIT in one round trip.

A web request's write is usually one flush followed by the COMMIT. Sent on
its own, the entries' INSERT would cost one more round trip to PostgreSQL
(a large share of a single-row write transaction: benchmarks/PROFILES.md). So the
flush that ``Session.commit()`` runs hands its entry rows here instead, and
the engine's ``commit`` event sends ``INSERT ...; COMMIT`` as one
simple-protocol query. The INSERT runs inside the transaction it describes:
if it fails, the COMMIT after it never runs and the transaction rolls back;
psycopg's own ``commit()`` then finds the transaction already closed and
sends nothing.

Only psycopg (sync and async) on a UTF-8 connection with
``standard_conforming_strings`` on is eligible, because the values are
inlined as SQL literals, whose quoting is exact under exactly those
settings. They are checked when the flush hands its rows over and again
when they are sent (a ``SET`` in between could change them); rows the
connection can no longer take as literals then go as a parameterized INSERT
before the COMMIT. Only exact ``str`` values are quoted here (a subclass's
``replace`` may do anything); any other value sends the rows parameterized
too. A flush that is not the commit's and large flushes (COPY) are written
at once, as before.

Up to :data:`MAX_CALLS` rows go as one ``CALL`` each of the insert
procedure that ``create_all`` makes (schema.INSERT_PROCEDURE): its INSERT is
planned once per connection, where a multi-row INSERT sent as text is parsed
and planned again on every commit; past a few rows one INSERT wins
(benchmarks/PROFILES.md has the crossing). A log made before the procedure
existed (create_all not run since) gets the INSERT, as before.

Rows held for a connection are dropped on its rollback; rows still held
when the session's commit ends without a COMMIT of the connection (a session
joined to an outer transaction) are written then, on that connection.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from whodid.store.schema import INSERT_PROCEDURE, PROCEDURE_EXISTS, entries

#: Fewer rows than this ride on the COMMIT; more go through COPY at once.
MAX_ROWS = 200
#: Up to this many rows are sent as one CALL each, more as one INSERT.
MAX_CALLS = 8

_NO_PARAMETERS = {"no_parameters": True}


def _literal(value: Any) -> str | None:
    """``value`` as a PostgreSQL literal, or None if it cannot be inlined safely."""
    if value is None:
        return "NULL"
    if value is True:
        return "true"
    if value is False:
        return "false"
    kind = value.__class__
    if kind is str:
        if "\x00" in value:  # libpq would cut the query text at the NUL
            return None
        return "'" + str.replace(value, "'", "''") + "'"
    if kind is dt.datetime and value.tzinfo is not None:
        return "'" + dt.datetime.isoformat(value) + "'::timestamptz"
    return None


def _groups(rows: Sequence[Sequence[Any]]) -> list[str] | None:
    """Each row as a parenthesised list of literals; None if any value cannot be one."""
    groups = []
    for row in rows:
        literals = [_literal(v) for v in row]
        if None in literals:
            return None
        groups.append("(" + ", ".join(literals) + ")")  # type: ignore[arg-type]
    return groups


class CommitSender:
    """Holds the entry rows of a commit's flush until that connection's COMMIT."""

    def __init__(self, columns: Sequence[str], values: Any) -> None:
        self._prefix = f"INSERT INTO {entries.name} ({', '.join(columns)}) VALUES "
        self._placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
        self._call = f"CALL {INSERT_PROCEDURE}"
        self._values = values  # row -> list of values in column order
        # Per connection: each held row's values, and the same row as literals.
        self._held: weakref.WeakKeyDictionary[Connection, list[tuple[list[Any], str]]] = (
            weakref.WeakKeyDictionary()
        )
        # Per DBAPI connection (it outlives the Connection objects checked out
        # on it): whether the insert procedure is there. Asked once.
        self._callable: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
        self._engines: weakref.WeakSet[Engine] = weakref.WeakSet()
        self._lock = threading.Lock()

    def eligible(self, connection: Connection) -> bool:
        dialect = connection.dialect
        if dialect.name != "postgresql" or dialect.driver not in ("psycopg", "psycopg_async"):
            return False
        raw: Any = connection.connection.driver_connection
        info = raw.info
        return bool(
            not raw.autocommit  # no transaction to ride on
            and info.encoding == "utf-8"
            and info.parameter_status("standard_conforming_strings") == "on"
        )

    def hold(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> bool:
        """Keep ``rows`` for ``connection``'s COMMIT; False if they must be written now."""
        if len(rows) >= MAX_ROWS:
            return False
        values = [self._values(row) for row in rows]
        groups = _groups(values)  # rendered once; sent as they are while still safe
        if groups is None:
            return False
        self._listen(connection.engine)
        self._learn_procedure(connection)
        held = self._held.get(connection)
        if held is None:
            self._held[connection] = list(zip(values, groups, strict=True))
        else:
            held += zip(values, groups, strict=True)
        return True

    def write_held(self, connection: Connection) -> None:
        """Write what is held for ``connection`` now, without committing."""
        self._send(connection, "")

    def drop(self, connection: Connection) -> None:
        self._held.pop(connection, None)

    def _learn_procedure(self, connection: Connection) -> None:
        """Ask once per DBAPI connection whether the insert procedure is there."""
        raw = connection.connection.driver_connection
        if raw not in self._callable:
            found = connection.exec_driver_sql(PROCEDURE_EXISTS, execution_options=_NO_PARAMETERS)
            self._callable[raw] = bool(found.scalar())

    # -- engine events ----------------------------------------------------------

    def _listen(self, engine: Engine) -> None:
        if engine in self._engines:
            return
        with self._lock:
            if engine not in self._engines:
                event.listen(engine, "commit", self._on_commit)
                event.listen(engine, "rollback", self.drop)
                self._engines.add(engine)

    def _on_commit(self, connection: Connection) -> None:
        self._send(connection, "; COMMIT")

    def _send(self, connection: Connection, suffix: str) -> None:
        held = self._held.pop(connection, None)
        if not held:
            return
        values = [row for row, _ in held]
        groups = [group for _, group in held] if self.eligible(connection) else None
        try:
            if groups is None:
                # Literals are no longer safe here: the driver quotes, and the
                # COMMIT goes its usual way after this INSERT.
                sql = self._prefix + ", ".join([self._placeholders] * len(values))
                connection.exec_driver_sql(sql, tuple(v for row in values for v in row))
                return
            if len(groups) <= MAX_CALLS and self._callable.get(
                connection.connection.driver_connection
            ):
                sql = "; ".join([self._call + group for group in groups]) + suffix
            else:
                sql = self._prefix + ", ".join(groups) + suffix
            connection.exec_driver_sql(sql, execution_options=_NO_PARAMETERS)
        except BaseException:
            # A failed INSERT leaves the transaction aborted (its COMMIT never
            # ran), but SQLAlchemy takes a failed commit to have ended the
            # transaction and would pool the connection as it is: end it here.
            if suffix:
                with contextlib.suppress(Exception):
                    connection.connection.dbapi_connection.rollback()  # type: ignore[union-attr]
            raise
