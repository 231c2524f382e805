"""Turns changes into entry rows and inserts them on the caller's connection.

The connection is the one of the flush (or of the session passed to
``record``), so entries commit and roll back with the change they describe.
All entries of one flush go out in one executemany, which SQLAlchemy sends as
a single multi-row INSERT where the driver allows it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import String
from sqlalchemy.engine import Connection

from whodid.context import ANONYMOUS, UNATTRIBUTED, RequestContext, current_context
from whodid.enrich import Enricher, default_enricher
from whodid.entry import digest, new_entry_id, utc
from whodid.schema import JSON_COLUMNS, entries
from whodid.values import to_json


@dataclass(slots=True)
class Change:
    """What happened to one resource, before it becomes an entry."""

    feature: str
    operation: str
    entity_type: str | None = None
    entity_id: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    action: str | None = None
    tenant_id: str | None = None


# A value longer than its column would fail the whole transaction on
# PostgreSQL; an audit write must never take the user's change down with it.
_LIMITS: dict[str, int] = {
    c.name: c.type.length
    for c in entries.columns
    if isinstance(c.type, String) and c.type.length and c.name not in ("id", "digest")
}


def _bound(row: dict[str, Any]) -> None:
    for name, limit in _LIMITS.items():
        value = row.get(name)
        if isinstance(value, str) and len(value) > limit:
            row[name] = value[:limit]


_INSERT = entries.insert()
# From this many entries in one flush, PostgreSQL's COPY beats multi-row
# INSERTs several times over (bulk imports, 10,000-row flushes).
COPY_THRESHOLD = 200
_COPY_COLUMNS = [c.name for c in entries.columns if c.name != "seq"]


def _copy_rows(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert through COPY on the flush's own connection (same transaction)."""
    raw: Any = connection.connection.dbapi_connection
    dumps = json.dumps
    with (
        raw.cursor() as cursor,
        cursor.copy(f"COPY {entries.name} ({', '.join(_COPY_COLUMNS)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(
                [
                    (None if row[name] is None else dumps(row[name], ensure_ascii=False))
                    if name in JSON_COLUMNS
                    else row[name]
                    for name in _COPY_COLUMNS
                ]
            )


class Writer:
    def __init__(self, enricher: Enricher | None = None) -> None:
        self.enricher = enricher

    def rows(
        self,
        changes: Sequence[Change],
        ctx: RequestContext | None = None,
        occurred_at: dt.datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Entry rows for ``changes``, attributed to ``ctx`` (default: the current one)."""
        if ctx is None:
            ctx = current_context()
        now = utc(occurred_at) if occurred_at else dt.datetime.now(dt.UTC)
        shared = self._context_fields(ctx)
        rows = []
        for change in changes:
            row = {
                **shared,
                "id": new_entry_id(),
                "occurred_at": now,
                "action": change.action or f"{change.feature}.{change.operation}",
                "feature": change.feature,
                "operation": change.operation,
                "entity_type": change.entity_type,
                "entity_id": change.entity_id,
                "metadata": to_json(dict(change.metadata)),
                "before": change.before,
                "after": change.after,
            }
            if change.tenant_id is not None and shared["tenant_id"] is None:
                row["tenant_id"] = change.tenant_id
            _bound(row)
            row["digest"] = digest(row)
            rows.append(row)
        return rows

    def _context_fields(self, ctx: RequestContext | None) -> dict[str, Any]:
        if ctx is None:
            actor, tenant_id, passkey, ip, ua, request_id = (
                UNATTRIBUTED,
                None,
                False,
                None,
                None,
                None,
            )
            enricher = self.enricher
        else:
            # Nobody named in a request: someone unauthenticated. Nobody named
            # in a script or job block: the system itself.
            actor = ctx.actor or (ANONYMOUS if ctx.in_request else UNATTRIBUTED)
            tenant_id, passkey, ip = ctx.tenant_id, ctx.passkey, ctx.ip
            ua, request_id = ctx.user_agent, ctx.request_id
            enricher = ctx.source.enricher or self.enricher
        enricher = enricher or default_enricher()
        return {
            "tenant_id": tenant_id,
            "actor_type": actor.type,
            "actor_id": actor.id,
            "actor_label": actor.label,
            "passkey": bool(passkey),
            "ip": ip,
            "country": enricher.country(ip) if ip else None,
            "user_agent": ua,
            "client": enricher.client(ua) if ua else None,
            "request_id": request_id,
        }

    def write(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        # One statement object for the process: SQLAlchemy's compiled cache
        # then skips recompiling, and a single row avoids the executemany path.
        if len(rows) == 1:
            connection.execute(_INSERT, rows[0])
        elif len(rows) >= COPY_THRESHOLD and connection.dialect.driver == "psycopg":
            _copy_rows(connection, rows)
        elif rows:
            connection.execute(_INSERT, list(rows))
