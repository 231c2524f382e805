"""SQLite: the ready-made INSERT through the cursor, and CSV lines built by SQLite."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from whodid.entry.cells import FORMULA_START, OCCURRED, PASSKEY, QUOTED, TEXT, csv_text
from whodid.entry.fields import COLUMNS, JSON_COLUMNS
from whodid.store.drivers.base import LineWriter, PreparedInsertDriver, Progress
from whodid.store.schema import entries


class SQLiteDriver(PreparedInsertDriver):
    """pysqlite (and aiosqlite for inserts): naive UTC text timestamps, CSV by SQL."""

    name = "sqlite"
    sqlite = True

    def export_csv(
        self,
        conn: Connection,
        where: Sequence[Any],
        fileobj: IO[Any],
        progress: Progress,
        lines: LineWriter,
    ) -> int | None:
        if conn.dialect.driver != "pysqlite":
            return None
        return sqlite_csv(conn, where, fileobj, lines, progress)


# -- SQLite: the CSV lines built by SQLite itself ---------------------------------
#
# The same bytes as :func:`lines`, but each row arrives as one finished CSV
# line: SQLite formats the timestamp, the passkey, the formula guard and the
# quoting, so Python only joins and writes. The order is the Python path's
# ``ORDER BY occurred_at, seq``, but only the row keys (seq) are sorted; the
# lines are then read in batches of those keys, by a range of seq when the
# batch is one (the usual case: entries are appended in time order) or by the
# keys themselves otherwise. A batch is used only if it holds exactly the keys
# asked for, each with a line; anything else (a timestamp or passkey not in
# the form whodid stores them, a NUL character) goes through the Python path,
# row for row the same. (A second connection reading every other batch in a
# thread was tried: SQLite's global allocator mutex made it slower, not
# faster, on 2 cores.)

_BATCH = 2000
_SEQ = COLUMNS.index("seq")
# SQLAlchemy stores DateTime on SQLite as naive UTC text in this form.
_STORED_TIME = (
    "-".join(["[0-9]" * 4, "[0-9]" * 2, "[0-9]" * 2])
    + " "
    + ":".join(["[0-9]" * 2] * 3)
    + "."
    + "[0-9]" * 6
)


def _sqlite_line_sql() -> str:
    """One SQL expression: the row's CSV line, or NULL if it needs the Python path."""
    assert QUOTED is not None
    codes = sorted(ord(ch) for ch in FORMULA_START)
    below = chr(codes[-1] + 1)  # every guarded first character sorts below this one
    assert below.isalnum()
    quote_chars = sorted(QUOTED, key=lambda ch: (ch != '"', ch != ",", ch))

    def needs_quotes(col: str) -> str:
        return "(" + " OR ".join(f"{col} LIKE '%{ch}%'" for ch in quote_chars) + ")"

    def quoted(col: str, prefix: str = "") -> str:
        return f"""'"{prefix}' || replace({col}, '"', '""') || '"'"""

    apostrophe = "''"  # one ' inside an SQL string literal
    apostrophe_literal = f"'{apostrophe}'"

    def inner_guarded(col: str) -> str:
        text = col
        for brk in ("char(13)", "char(10)"):
            for ch in "=+-@\t":
                lit = "char(9)" if ch == "\t" else f"'{ch}'"
                text = f"replace({text}, {brk} || {lit}, {brk} || {apostrophe_literal} || {lit})"
        breaks = f"instr({col}, char(13)) OR instr({col}, char(10))"
        return f"(CASE WHEN {breaks} THEN {text} ELSE {col} END)"

    def text_cell(col: str, quoting: bool) -> str:
        col = inner_guarded(col)
        guarded = f"({col} < '{below}' AND unicode({col}) IN ({', '.join(map(str, codes))}))"
        if not quoting:
            return f"CASE WHEN {guarded} THEN {apostrophe_literal} || {col} ELSE {col} END"
        return (
            f"CASE WHEN {guarded} THEN CASE WHEN {needs_quotes(col)} "
            f"THEN {quoted(col, apostrophe)} ELSE {apostrophe_literal} || {col} END "
            f"WHEN {needs_quotes(col)} THEN {quoted(col)} ELSE {col} END"
        )

    # printf() builds the line in one go (a chain of || copies it once per
    # cell) and renders NULL as an empty cell, as csv does; but its %s stops
    # at a NUL character, so a row holding one takes the Python path.
    def line(grouped: frozenset[str]) -> str:
        formats: list[str] = []
        args: list[str] = []
        for i, name in enumerate(COLUMNS):
            col = f'"{name}"'
            if i == OCCURRED:
                # stored "YYYY-MM-DD HH:MM:SS.ffffff" -> "YYYY-MM-DDTHH:MM:SS.ffffffZ"
                formats.append("%.10sT%sZ")
                args += [col, f"substr({col}, 12)"]
                continue
            formats.append("%s")
            if i == PASSKEY:
                args.append(f"CASE WHEN {col} THEN 'true' ELSE 'false' END")
            elif name in JSON_COLUMNS:
                text = f"CAST({col} AS TEXT)"
                args.append(f"CASE WHEN {needs_quotes(text)} THEN {quoted(text)} ELSE {text} END")
            elif i in TEXT:
                args.append(text_cell(col, name not in grouped))
            else:
                args.append(col)
        return f"printf('{','.join(formats)}\n', {', '.join(args)})"

    texts = [name for i, name in enumerate(COLUMNS) if i in TEXT]
    # The cells that rarely need quotes are checked together: one string of all
    # of them, its quote characters turned into commas, one LIKE. (User agents
    # usually hold a comma, so they are checked on their own.)
    grouped = frozenset(name for name in texts if name != "user_agent")
    grouped_cols = ", ".join(f'"{name}"' for name in texts if name in grouped)
    together = f"printf('{'%s' * len(grouped)}', {grouped_cols})"
    for ch in quote_chars:
        if ch != ",":
            together = f"replace({together}, '{ch}', ',')"
    may_hold_nul = [f'"{name}"' for name in COLUMNS if name in JSON_COLUMNS or name in texts]
    nul = " OR ".join(f"instr({col}, char(0))" for col in may_hold_nul)
    return (
        f"CASE WHEN {nul} THEN NULL "
        f'WHEN NOT ("occurred_at" GLOB \'{_STORED_TIME}\' AND "passkey" IN (0, 1)) THEN NULL '
        f"WHEN {together} LIKE '%,%' THEN {line(frozenset())} "
        f"ELSE {line(grouped)} END"
    )


def _bound(compiled: Any, dialect: Any) -> list[Any]:
    """The positional parameters of ``compiled``, converted as SQLAlchemy would."""
    params = compiled.construct_params()
    values = []
    for name in compiled.positiontup:
        value = params[name]
        bind = compiled.binds.get(name)
        if bind is not None:
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                value = process(value)
        values.append(value)
    return values


class _LineReader:
    """Reads the CSV lines of a batch of keys over one DBAPI connection."""

    def __init__(self, raw: Any, line: str, where_sql: str, where_params: list[Any]) -> None:
        self.raw = raw
        line = f"CAST({line} AS BLOB)"  # bytes: no decoding here, no encoding to write
        self.range_sql = (
            f"SELECT {line}, seq FROM {entries.name} NOT INDEXED "
            f"WHERE seq >= ? AND seq <= ? AND ({where_sql}) ORDER BY seq"
        )
        self.line = line
        self.where_params = where_params

    def read(self, keys: list[int]) -> bytes | None:
        """The batch's lines (UTF-8), or None if some row needs the Python path."""
        get_line, get_seq = itemgetter(0), itemgetter(1)
        if keys == sorted(keys) and keys[-1] - keys[0] < 4 * len(keys):
            rows = self.raw.execute(
                self.range_sql, (keys[0], keys[-1], *self.where_params)
            ).fetchall()
            if list(map(get_seq, rows)) != keys:
                return None
        else:
            found: dict[int, Any] = {}
            for at in range(0, len(keys), 500):
                part = keys[at : at + 500]
                sql = (
                    f"SELECT seq, {self.line} FROM {entries.name} "
                    f"WHERE seq IN ({', '.join('?' * len(part))})"
                )
                found.update(self.raw.execute(sql, part).fetchall())
            rows = [(found.get(key),) for key in keys]
        try:
            data = b"".join(map(get_line, rows))
        except TypeError:  # a NULL line, or a key not found
            return None
        # (Rows with a NUL are sent to the Python path by the SQL already: printf
        # and LIKE stop at one.)
        return None if b"\x00" in data else data


def sqlite_csv(
    conn: Any,
    where: Sequence[Any],
    fileobj: IO[str] | IO[bytes],
    lines: LineWriter,
    progress: Callable[[int], None] | None = None,
) -> int | None:
    """The CSV export on SQLite (pysqlite), lines built in SQL; the same bytes as
    :func:`write`. Returns the number of entries, or None if this Python's csv
    module quotes differently from what the SQL implements or the database is
    not UTF-8 (then nothing is written and the caller takes the Python path)."""
    if QUOTED is None:
        return None
    dialect = conn.dialect
    c = entries.c
    options = {"render_postcompile": True}
    keys_stmt = sa.select(c.seq).where(*where).order_by(c.occurred_at, c.seq)
    keys_sql = keys_stmt.compile(dialect=dialect, compile_kwargs=options)
    if where:
        where_compiled = sa.and_(*where).compile(dialect=dialect, compile_kwargs=options)
        where_sql, where_params = str(where_compiled), _bound(where_compiled, dialect)
    else:
        where_sql, where_params = "1", []
    line = _sqlite_line_sql()
    raw = conn.connection.dbapi_connection
    if raw.execute("PRAGMA encoding").fetchone()[0] != "UTF-8":
        return None  # the lines are read as the database's bytes
    binary = not isinstance(fileobj, io.TextIOBase)

    def emit(data: bytes) -> None:
        fileobj.write(data if binary else data.decode("utf-8"))  # type: ignore[arg-type]

    def python_path(keys: list[int]) -> bytes:
        columns = [sa.cast(c[n], sa.Text) if n in JSON_COLUMNS else c[n] for n in COLUMNS]
        found: dict[int, tuple[Any, ...]] = {}
        for at in range(0, len(keys), 500):  # SQLite before 3.32 takes 999 parameters
            stmt = sa.select(*columns).where(c.seq.in_(keys[at : at + 500]))
            found.update((row[_SEQ], tuple(row)) for row in conn.execute(stmt))
        text = lines([found[key] for key in keys], "csv")
        next(text)  # the header
        return "".join(text).encode("utf-8")

    began = not raw.in_transaction
    if began:  # one snapshot for the keys and every batch
        raw.execute("BEGIN")
    try:
        reader = _LineReader(raw, line, where_sql, where_params)
        emit(csv_text(COLUMNS).encode("utf-8"))
        keys_cursor = raw.execute(str(keys_sql), _bound(keys_sql, dialect))
        count = 0
        while keys := [key for (key,) in keys_cursor.fetchmany(_BATCH)]:
            emit(reader.read(keys) or python_path(keys))
            count += len(keys)
            if progress is not None:
                progress(len(keys))
        return count
    finally:
        if began and raw.in_transaction:
            raw.execute("ROLLBACK")
