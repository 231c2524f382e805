"""CSV and NDJSON exports: every match, streamed, safe to open in a spreadsheet.

Rows are written as they are read (a server-side cursor underneath), so
memory stays flat whatever the size of the log. Timestamps are always UTC.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, Literal

from whodid.entry import CONTENT_FIELDS, Entry

Format = Literal["csv", "ndjson"]
FORMATS: tuple[Format, ...] = ("csv", "ndjson")
COLUMNS = (*CONTENT_FIELDS, "seq", "digest")
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}

# Spreadsheets run a cell starting with one of these as a formula (OWASP's
# list); a leading apostrophe makes them show it as text instead.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def safe_cell(value: Any) -> str:
    """One CSV cell: nested values as JSON text, formulas neutralised."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    else:
        text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_row(entry: Entry) -> list[str]:
    data = entry.to_dict()
    return [safe_cell(data[name]) for name in COLUMNS]


class _Line:
    """A file-like sink for csv.writer that hands back each formatted line."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text = text
        return len(text)


def lines(entries: Iterable[Entry], format: Format) -> Iterator[str]:
    """The export as text lines (header first for CSV), for streaming responses."""
    if format == "ndjson":
        for entry in entries:
            yield json.dumps(entry.to_dict(), ensure_ascii=False, sort_keys=False) + "\n"
        return
    if format != "csv":
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    sink = _Line()
    writer = csv.writer(sink, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    yield sink.text
    for entry in entries:
        writer.writerow(csv_row(entry))
        yield sink.text


def write(
    fileobj: IO[str] | IO[bytes],
    entries: Iterable[Entry],
    format: Format,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the export to ``fileobj`` (text or binary); returns the number of entries."""
    count = 0
    binary = "b" in getattr(fileobj, "mode", "") or not _is_text(fileobj)

    def counted() -> Iterator[Entry]:
        nonlocal count
        for entry in entries:
            count += 1
            if progress is not None:
                progress(1)
            yield entry

    for line in lines(counted(), format):
        fileobj.write(line.encode("utf-8") if binary else line)  # type: ignore[arg-type]
    return count


def _is_text(fileobj: Any) -> bool:
    import io

    return isinstance(fileobj, io.TextIOBase) or hasattr(fileobj, "encoding")
