"""CSV and NDJSON exports: every match, streamed, safe to open in a spreadsheet.

Rows are written as they are read (a server-side cursor underneath), so
memory stays flat whatever the size of the log. Timestamps are always UTC.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import itemgetter
from typing import IO, Any, Literal

import sqlalchemy as sa

from whodid.entry.fields import COLUMNS, iso
from whodid.store.schema import JSON_COLUMNS, entries

Format = Literal["csv", "ndjson"]
FORMATS: tuple[Format, ...] = ("csv", "ndjson")
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}

# Spreadsheets run a cell starting with one of these as a formula (OWASP's
# list); a leading apostrophe makes them show it as text instead.
_FORMULA_START = "=+-@\t\r\n"


_OCCURRED = COLUMNS.index("occurred_at")
_PASSKEY = COLUMNS.index("passkey")
# Columns that can hold text a user chose (JSON text starts with { or n).
_TEXT = tuple(
    i
    for i, name in enumerate(COLUMNS)
    if name not in JSON_COLUMNS and name not in ("occurred_at", "passkey", "seq")
)


def lines(rows: Iterable[Sequence[Any]], format: Format) -> Iterator[str]:
    """The export as text lines (a header first for CSV).

    ``rows`` are tuples in :data:`COLUMNS` order with the JSON columns as JSON
    text, as :func:`whodid.query.iter_export_rows` reads them: passing that
    text through, instead of decoding and re-encoding it, is most of the
    export's speed.
    """
    if format == "ndjson":
        # One json.dumps per row for the scalar fields, the JSON columns' text
        # spliced in as it came from the database.
        dumps = json.dumps
        scalar = [(i, n) for i, n in enumerate(COLUMNS) if n not in JSON_COLUMNS]
        nested = [(i, f',"{n}":') for i, n in enumerate(COLUMNS) if n in JSON_COLUMNS]
        for row in rows:
            doc = {n: row[i] for i, n in scalar}
            doc["occurred_at"] = iso(doc["occurred_at"])
            head = dumps(doc, ensure_ascii=False)[:-1]
            tail = "".join(key + (row[i] or "null") for i, key in nested)
            yield head + tail + "}\n"
        return
    if format != "csv":
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    sink = _Line()
    # csv quotes a cell holding a character of its line terminator: "\r\n" makes
    # it quote bare CRs too (a spreadsheet would start a row at one). Lines end
    # in "\n" like PostgreSQL's COPY, so every path writes the same bytes.
    writer = csv.writer(sink, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    yield sink.text[:-2] + "\n"
    # The per-cell work, unrolled: this loop is the export's hot path.
    formula = _FORMULA_START
    for row in rows:
        cells = list(row)
        cells[_OCCURRED] = iso(cells[_OCCURRED])
        cells[_PASSKEY] = "true" if cells[_PASSKEY] else "false"
        for i in _TEXT:
            value = cells[i]
            if value:
                if "\r" in value or "\n" in value:
                    value = cells[i] = guard_lines(value)
                if value[0] in formula:
                    cells[i] = "'" + value
        writer.writerow(cells)  # None is written as an empty cell
        yield sink.text[:-2] + "\n"


# A line inside a cell that starts like a formula: a spreadsheet that splits
# cells at line breaks would run it.
_INNER_FORMULA = re.compile(r"([\r\n])([=+\-@\t])")


def guard_lines(value: str) -> str:
    """``value`` with an apostrophe before each inner line that starts like a formula."""
    return _INNER_FORMULA.sub(r"\1'\2", value)


class _Line:
    """A file-like sink for csv.writer that hands back each formatted line."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text = text
        return len(text)


def write_any(
    conn: Any, spec: Any, fileobj: Any, format: Format, progress: Callable[[int], None] | None
) -> int:
    """Write the export of ``spec`` to ``fileobj`` the fastest way ``conn`` allows.

    CSV goes through PostgreSQL's COPY on psycopg and SQLite's own SQL on
    pysqlite (both checked byte for byte against :func:`lines`); anything
    else through :func:`lines`.
    """
    from whodid.store import query

    if format == "csv" and conn.dialect.driver == "psycopg":
        return copy_csv(conn, query.export_where(conn, spec), fileobj, progress)
    if format == "csv" and conn.dialect.driver == "pysqlite":
        count = sqlite_csv(conn, query.export_where(conn, spec), fileobj, progress)
        if count is not None:
            return count
    return write(fileobj, query.iter_export_rows(conn, spec), format, progress)


def write(
    fileobj: IO[str] | IO[bytes],
    rows: Iterable[Sequence[Any]],
    format: Format,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the export to ``fileobj`` (text or binary); returns the number of entries."""
    count = 0
    binary = not isinstance(fileobj, io.TextIOBase)

    def counted() -> Iterator[Sequence[Any]]:
        nonlocal count
        for row in rows:
            count += 1
            if progress is not None and count % 1000 == 0:
                progress(1000)
            yield row

    buffer: list[str] = []
    for line in lines(counted(), format):
        buffer.append(line)
        if len(buffer) >= 1000:
            _flush(fileobj, buffer, binary)
    _flush(fileobj, buffer, binary)
    if progress is not None:
        progress(count % 1000)
    return count


def _flush(fileobj: Any, buffer: list[str], binary: bool) -> None:
    text = "".join(buffer)
    buffer.clear()
    fileobj.write(text.encode("utf-8") if binary else text)


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
    guard = "=+-@\t\r\n"
    columns: list[Any] = []
    for i, name in enumerate(COLUMNS):
        col: Any = c[name]
        if i == _OCCURRED:
            expr: Any = sa.func.to_char(
                sa.func.timezone("UTC", col), sa.literal_column('\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\'')
            )
        elif i == _PASSKEY:
            expr = sa.case((col, sa.literal_column("'true'")), else_=sa.literal_column("'false'"))
        elif name in JSON_COLUMNS:
            expr = sa.cast(col, sa.Text)
        elif i in _TEXT:
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


def _csv_text(values: Sequence[Any]) -> str:
    sink = io.StringIO()
    csv.writer(sink, lineterminator="\r\n").writerow(values)  # as lines() writes
    return sink.getvalue()[:-2] + "\n"


def _quoted_chars() -> frozenset[str] | None:
    """The characters that make csv quote a field, if its rules are the ones
    the SQL below implements (minimal quoting, quotes doubled); else None."""
    quoted = set()
    for code in range(128):
        value = f"a{chr(code)}b"
        text = _csv_text([value, "x"])
        if text == '"' + value.replace('"', '""') + '",x\n':
            quoted.add(chr(code))
        elif text != value + ",x\n":
            return None
    plain = ["", None, " a ", 5, "é€😀", "x"]
    if _csv_text(plain) != ",, a ,5,é€😀,x\n":
        return None
    if not quoted <= {",", '"', "\n", "\r"} or not {",", '"'} <= quoted:
        return None
    return frozenset(quoted)


_QUOTED = _quoted_chars()


def _sqlite_line_sql() -> str:
    """One SQL expression: the row's CSV line, or NULL if it needs the Python path."""
    assert _QUOTED is not None
    codes = sorted(ord(ch) for ch in _FORMULA_START)
    below = chr(codes[-1] + 1)  # every guarded first character sorts below this one
    assert below.isalnum()
    quote_chars = sorted(_QUOTED, key=lambda ch: (ch != '"', ch != ",", ch))

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
            if i == _OCCURRED:
                # stored "YYYY-MM-DD HH:MM:SS.ffffff" -> "YYYY-MM-DDTHH:MM:SS.ffffffZ"
                formats.append("%.10sT%sZ")
                args += [col, f"substr({col}, 12)"]
                continue
            formats.append("%s")
            if i == _PASSKEY:
                args.append(f"CASE WHEN {col} THEN 'true' ELSE 'false' END")
            elif name in JSON_COLUMNS:
                text = f"CAST({col} AS TEXT)"
                args.append(f"CASE WHEN {needs_quotes(text)} THEN {quoted(text)} ELSE {text} END")
            elif i in _TEXT:
                args.append(text_cell(col, name not in grouped))
            else:
                args.append(col)
        return f"printf('{','.join(formats)}\n', {', '.join(args)})"

    texts = [name for i, name in enumerate(COLUMNS) if i in _TEXT]
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
    progress: Callable[[int], None] | None = None,
) -> int | None:
    """The CSV export on SQLite (pysqlite), lines built in SQL; the same bytes as
    :func:`write`. Returns the number of entries, or None if this Python's csv
    module quotes differently from what the SQL implements or the database is
    not UTF-8 (then nothing is written and the caller takes the Python path)."""
    if _QUOTED is None:
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
        emit(_csv_text(COLUMNS).encode("utf-8"))
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
