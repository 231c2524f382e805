"""The entry: its fields, its canonical form and digest, and JSON-safe values.

:mod:`whodid.entry.fields` (the Entry, ids, timestamps, the canonical bytes the
digest covers), :mod:`whodid.entry.values` (exact JSON-safe values, markers,
redaction), :mod:`whodid.entry.fastjson` (orjson where it writes json's bytes).
"""

from whodid.entry.fields import COLUMNS, CONTENT_FIELDS, Entry, canonical, iso, utc

__all__ = ["COLUMNS", "CONTENT_FIELDS", "Entry", "canonical", "iso", "utc"]
