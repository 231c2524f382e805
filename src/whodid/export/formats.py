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

from whodid.entry.cells import FORMULA_START, OCCURRED, PASSKEY, TERMINATOR, TEXT, guard_lines
from whodid.entry.fields import COLUMNS, JSON_COLUMNS, iso

Format = Literal["csv", "ndjson"]
FORMATS: tuple[Format, ...] = ("csv", "ndjson")
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}


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
    writer = csv.writer(sink, lineterminator=TERMINATOR)
    writer.writerow(COLUMNS)
    yield sink.text[:-2] + "\n"
    # The per-cell work, unrolled: this loop is the export's hot path.
    formula = FORMULA_START
    for row in rows:
        cells = list(row)
        cells[OCCURRED] = iso(cells[OCCURRED])
        cells[PASSKEY] = "true" if cells[PASSKEY] else "false"
        for i in TEXT:
            value = cells[i]
            if value:
                if "\r" in value or "\n" in value:
                    value = cells[i] = guard_lines(value)
                if value[0] in formula:
                    cells[i] = "'" + value
        writer.writerow(cells)  # None is written as an empty cell
        yield sink.text[:-2] + "\n"


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
