"""How an entry's fields become CSV cells, for every CSV writer alike.

Python's csv module (:func:`whodid.export.formats.lines`), PostgreSQL's COPY
and SQLite's own SQL (:mod:`whodid.store.drivers`) each write the export; these
rules are what they share, so all three write the same bytes:

- a cell starting with ``= + - @ TAB CR LF`` gets a leading apostrophe (a
  spreadsheet would run it as a formula);
- a cell holding a delimiter, a quote, a CR or an LF is quoted, quotes doubled;
- inside a cell, each line that starts like a formula gets the apostrophe too
  (a spreadsheet that splits cells at line breaks would run it).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from typing import Any

from whodid.entry.fields import COLUMNS, JSON_COLUMNS

# Spreadsheets run a cell starting with one of these as a formula (OWASP's
# list); a leading apostrophe makes them show it as text instead.
FORMULA_START = "=+-@\t\r\n"


OCCURRED = COLUMNS.index("occurred_at")
PASSKEY = COLUMNS.index("passkey")
# Columns that can hold text a user chose (JSON text starts with { or n).
TEXT = tuple(
    i
    for i, name in enumerate(COLUMNS)
    if name not in JSON_COLUMNS and name not in ("occurred_at", "passkey", "seq")
)


# A line inside a cell that starts like a formula: a spreadsheet that splits
# cells at line breaks would run it.
INNER_FORMULA = re.compile(r"([\r\n])([=+\-@\t])")


def guard_lines(value: str) -> str:
    """``value`` with an apostrophe before each inner line that starts like a formula."""
    return INNER_FORMULA.sub(r"\1'\2", value)


#: csv quotes a cell holding a character of its line terminator: "\r\n" makes it
#: quote bare CRs too. Lines end in "\n" like PostgreSQL's COPY.
TERMINATOR = "\r\n"


def csv_text(values: Sequence[Any]) -> str:
    sink = io.StringIO()
    csv.writer(sink, lineterminator=TERMINATOR).writerow(values)  # as lines() writes
    return sink.getvalue()[:-2] + "\n"


def quoted_chars() -> frozenset[str] | None:
    """The characters that make csv quote a field, if its rules are the ones
    the SQL below implements (minimal quoting, quotes doubled); else None."""
    quoted = set()
    for code in range(128):
        value = f"a{chr(code)}b"
        text = csv_text([value, "x"])
        if text == '"' + value.replace('"', '""') + '",x\n':
            quoted.add(chr(code))
        elif text != value + ",x\n":
            return None
    plain = ["", None, " a ", 5, "é€😀", "x"]
    if csv_text(plain) != ",, a ,5,é€😀,x\n":
        return None
    if not quoted <= {",", '"', "\n", "\r"} or not {",", '"'} <= quoted:
        return None
    return frozenset(quoted)


#: The characters that make a cell quoted (None: csv quotes otherwise than assumed).
QUOTED = quoted_chars()
