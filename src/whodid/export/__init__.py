"""Export formats: CSV and NDJSON lines from entry rows (:mod:`whodid.export.formats`)."""

from whodid.export.formats import FORMATS, MEDIA_TYPES, Format, lines, write

__all__ = ["FORMATS", "MEDIA_TYPES", "Format", "lines", "write"]
