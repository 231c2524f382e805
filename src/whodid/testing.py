"""What tests and benchmarks need beyond the public API; not for application code.

An audit log only ever gains entries stamped now. Tests of date filters,
retention and paging, and benchmarks seeding a year of history, need entries
from the past: :func:`write_entries` writes them, through the Auditor's own
writer, so they are the entries whodid would have written then.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from whodid.auditor import Auditor
from whodid.context import RequestContext, current_context
from whodid.errors import ConfigurationError
from whodid.store.writer import Change

__all__ = ["Change", "cursor_at", "entry_rows", "write_entries", "write_rows"]


def entry_rows(
    auditor: Auditor,
    changes: Sequence[Change],
    ctx: RequestContext | None = None,
    *,
    occurred_at: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """The entry rows whodid would write for ``changes`` by ``ctx`` at ``occurred_at``."""
    return auditor.writer.rows(changes, ctx or current_context(), occurred_at=occurred_at)


def write_rows(auditor: Auditor, rows: Sequence[dict[str, Any]]) -> None:
    """Write rows from :func:`entry_rows` in one transaction (many at once: seeding)."""
    if auditor.engine is None:
        raise ConfigurationError("write_rows needs an Auditor with an engine")
    with auditor.engine.begin() as conn:
        auditor.writer.write(conn, rows)


def write_entries(
    auditor: Auditor,
    changes: Sequence[Change],
    ctx: RequestContext | None = None,
    *,
    occurred_at: dt.datetime | None = None,
) -> None:
    """Write ``changes`` as entries attributed to ``ctx`` (default: the current
    context), stamped ``occurred_at`` (default: now), in one transaction.

    Example:
        ``write_entries(auditor, [Change("payment", "refund")], ctx, occurred_at=last_year)``
    """
    write_rows(auditor, entry_rows(auditor, changes, ctx, occurred_at=occurred_at))


def cursor_at(auditor: Auditor, depth: int, **filters: Any) -> str:
    """The cursor a client holds after paging ``depth`` entries deep with ``filters``
    (without reading the pages before it: a benchmark's deep page in one query)."""
    import sqlalchemy as sa

    from whodid.entry.fields import Entry
    from whodid.store.query import Filters, encode_cursor, stored_time
    from whodid.store.schema import entries

    if auditor.engine is None:
        raise ConfigurationError("cursor_at needs an Auditor with an engine")
    spec = Filters.build(**filters)
    start, end = spec.window()
    c = entries.c
    with auditor.engine.connect() as conn:
        stmt = (
            sa.select(entries)
            .where(
                *spec.conditions(),
                c.occurred_at >= stored_time(start, conn),
                c.occurred_at <= stored_time(end, conn),
            )
            .order_by(c.occurred_at.desc(), c.seq.desc())
            .offset(depth - 1)
            .limit(1)
        )
        row = conn.execute(stmt).mappings().one()
    return encode_cursor(Entry.from_row(row), spec)
