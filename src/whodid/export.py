"""CSV and NDJSON exports: every match, streamed, safe to open in a spreadsheet.

Rows are written as they are read (a server-side cursor underneath), so
memory stays flat whatever the size of the log. Timestamps are always UTC.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any, Literal

import sqlalchemy as sa

from whodid.entry import CONTENT_FIELDS, iso
from whodid.schema import JSON_COLUMNS, entries

Format = Literal["csv", "ndjson"]
FORMATS: tuple[Format, ...] = ("csv", "ndjson")
COLUMNS = (*CONTENT_FIELDS, "seq", "digest")
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
    # "\n" like PostgreSQL's COPY, so both paths write the same bytes.
    writer = csv.writer(sink, lineterminator="\n")
    writer.writerow(COLUMNS)
    yield sink.text
    # The per-cell work, unrolled: this loop is the export's hot path.
    formula = _FORMULA_START
    for row in rows:
        cells = list(row)
        cells[_OCCURRED] = iso(cells[_OCCURRED])
        cells[_PASSKEY] = "true" if cells[_PASSKEY] else "false"
        for i in _TEXT:
            value = cells[i]
            if value and value[0] in formula:
                cells[i] = "'" + value
        writer.writerow(cells)  # None is written as an empty cell
        yield sink.text


class _Line:
    """A file-like sink for csv.writer that hands back each formatted line."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text = text
        return len(text)


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
