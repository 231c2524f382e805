"""Export: CSV and NDJSON of entry rows (:mod:`whodid.export.formats`), written the
fastest way the database's driver allows (:func:`write_export`)."""

from __future__ import annotations

from typing import IO, Any

from sqlalchemy.engine import Connection

from whodid.export.formats import FORMATS, MEDIA_TYPES, Format, lines, write
from whodid.store import query
from whodid.store.drivers import driver_for

__all__ = ["FORMATS", "MEDIA_TYPES", "Format", "lines", "write", "write_export"]


def write_export(
    conn: Connection,
    spec: query.Filters,
    fileobj: IO[Any],
    format: Format,
    progress: Any = None,
    *,
    fast_paths: bool = True,
) -> int:
    """Write every entry ``spec`` matches to ``fileobj``; returns how many.

    CSV goes through the driver where it has its own way (PostgreSQL's COPY,
    SQLite's SQL), each checked byte for byte against :func:`lines`; anything
    else through :func:`lines`.
    """
    if format == "csv":
        driver = driver_for(conn, fast_paths=fast_paths)
        count = driver.export_csv(conn, query.export_where(conn, spec), fileobj, progress, lines)
        if count is not None:
            return count
    return write(fileobj, query.iter_export_rows(conn, spec), format, progress)
