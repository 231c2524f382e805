"""Turns changes into entry rows and inserts them on the caller's connection.

The connection is the one of the flush (or of the session passed to
``record``), so entries commit and roll back with the change they describe.
The entries of one flush go out as one multi-row INSERT (in chunks of 100
rows), or through COPY on psycopg from 200 rows up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

import orjson
from sqlalchemy import String
from sqlalchemy.engine import Connection

from whodid.context import ANONYMOUS, UNATTRIBUTED, Enrichment, RequestContext, current_context
from whodid.entry import fastjson
from whodid.entry.fields import (
    CONTENT_FIELDS,
    JSON_COLUMNS,
    canonical_json,
    canonical_spliced,
    iso,
    new_entry_ids,
    utc,
)
from whodid.entry.values import plain_text, storable, to_json
from whodid.errors import ConfigurationError, CrossTenantWrite
from whodid.store.drivers import ENCODED, Drivers
from whodid.store.enrich import Enricher, default_enricher
from whodid.store.schema import entries
from whodid.store.traces import active_span_ids


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
# The fields a change sets; the context's fields are bounded once per flush.
_CHANGE_FIELDS = ("action", "feature", "operation", "entity_type", "entity_id", "tenant_id")
_CHANGE_LIMITS = [(name, _LIMITS[name]) for name in _CHANGE_FIELDS if name in _LIMITS]


# What a flush bounds of its context: the context's tenant too, which a change
# may override and which is compared with the change's in its stored form.
_SHARED_LIMITS = [
    (name, limit)
    for name, limit in _LIMITS.items()
    if name not in _CHANGE_FIELDS or name == "tenant_id"
]


def _bound(row: dict[str, Any], limits: Iterable[tuple[str, int]]) -> None:
    """Make every text field an exact, storable str within its column's length."""
    for name, limit in limits:
        value = row[name]
        if value is None:
            continue
        if value.__class__ is not str or not storable(value):
            value = plain_text(value)
        row[name] = value[:limit] if len(value) > limit else value


def _base_doc(shared: dict[str, Any], client: str | None) -> dict[str, Any] | None:
    """The part of the digest document that every change of a flush shares,
    or None if a context field is not a type orjson writes as json does."""
    doc = {name: shared[name] for name in _SHARED_CONTENT}
    for value in doc.values():
        if value.__class__ not in fastjson.SCALARS:
            return None
    doc["client"] = None if client is None else orjson.Fragment(client)
    return doc


def _fast_encoded(
    row: dict[str, Any], client: str | None, base: dict[str, Any]
) -> tuple[dict[str, str | None], str] | None:
    """The stored JSON texts and the digest of ``row`` through orjson, or None
    where orjson might write other bytes than json (see fastjson.py).

    ``base`` is :func:`_base_doc` of the flush: only what a change sets is
    checked and added here, once per entry.
    """
    doc = base.copy()
    doc["id"] = row["id"]
    doc["occurred_at"] = row["occurred_at"]
    for name in _CHANGE_FIELDS:
        value = row[name]
        if value.__class__ not in fastjson.SCALARS:
            return None
        doc[name] = value
    encoded: dict[str, str | None] = {"client": client}
    for name in ("metadata", "before", "after"):
        value = row[name]
        if value is None:
            encoded[name] = doc[name] = None
            continue
        if value == {}:
            encoded[name], doc[name] = "{}", _EMPTY
            continue
        text = fastjson.dumps(value)
        if text is None:
            return None
        encoded[name] = text.decode()
        doc[name] = orjson.Fragment(text)
    body = fastjson.encode(doc)
    if body is None:
        return None
    return encoded, sha256(body).hexdigest()


def _json_text(value: dict[str, Any]) -> str:
    """``value``'s canonical JSON text, through orjson where that gives the same bytes."""
    data = fastjson.dumps(value)
    return canonical_json(value) if data is None else data.decode()


# The digest document's scalars that the context gives every change of a
# flush alike; the others are the writer's own (id, occurred_at) or a
# change's (_CHANGE_FIELDS, tenant_id included: a change may name it).
_SHARED_CONTENT = tuple(
    name
    for name in CONTENT_FIELDS
    if name not in (*_CHANGE_FIELDS, "id", "occurred_at") and name not in JSON_COLUMNS
)
_EMPTY = orjson.Fragment(b"{}")


class Writer:
    """Turns changes into entry rows and inserts them on the caller's connection.

    Args:
        enricher: GeoIP and user-agent lookups (default: user agents only).
        fast_paths: False sends every row through SQLAlchemy Core's INSERT, the
            reference the faster ways (a ready-made INSERT, COPY, riding on
            the COMMIT) must match byte for byte.
        cross_tenant: what a change to a row of tenant B made in tenant A's
            context becomes: ``"file"`` it under B with ``acting_tenant_id: A``
            in its metadata, or ``"refuse"`` it (:class:`CrossTenantWrite`,
            which fails the flush).
    """

    def __init__(
        self,
        enricher: Enricher | None = None,
        *,
        fast_paths: bool = True,
        cross_tenant: str = "file",
    ) -> None:
        if cross_tenant not in ("file", "refuse"):
            raise ConfigurationError(
                f"cross_tenant must be 'file' (under the row's tenant, saying who acted "
                f"from where) or 'refuse', got {cross_tenant!r}"
            )
        self.enricher = enricher
        self.fast_paths = fast_paths
        self.cross_tenant = cross_tenant
        self.drivers = Drivers(fast_paths=fast_paths)

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
        stamp = iso(now)
        shared = self._context_fields(ctx)
        # The context's tenant too (it is a change field, bounded per row below):
        # the cross-tenant comparison and acting_tenant_id must see the stored form.
        _bound(shared, _SHARED_LIMITS)
        if shared["client"] is not None:
            # Parsed from the user agent as given: its pieces need the same care.
            shared["client"] = to_json(shared["client"])
        client = None if shared["client"] is None else _json_text(shared["client"])
        base = _base_doc(shared, client)
        ids = new_entry_ids(len(changes))
        # The active OpenTelemetry span, when the app traces: in metadata, so
        # an old log needs no new column (and q finds a trace id).
        traced = active_span_ids()
        rows = []
        for change, entry_id in zip(changes, ids, strict=True):
            metadata = to_json(dict(change.metadata)) if change.metadata else {}
            if traced is not None:
                metadata = {**metadata, **traced}
            tenant = shared["tenant_id"]
            if change.tenant_id is not None and change.tenant_id != tenant:
                if tenant is not None:
                    self._cross_tenant(change, tenant)
                    metadata = {**metadata, "acting_tenant_id": tenant}
                tenant = plain_text(change.tenant_id)
            row = {
                **shared,
                "id": entry_id,
                "occurred_at": now,
                "action": change.action or f"{change.feature}.{change.operation}",
                "feature": change.feature,
                "operation": change.operation,
                "entity_type": change.entity_type,
                "entity_id": change.entity_id,
                "tenant_id": tenant,
                "metadata": metadata,
                "before": change.before,
                "after": change.after,
            }
            _bound(row, _CHANGE_LIMITS)
            # Each JSON field is encoded once: the same text is stored and
            # goes into the canonical form the digest covers.
            row["occurred_at"] = stamp
            fast = None if base is None else _fast_encoded(row, client, base)
            if fast is None:
                encoded = {
                    "client": client,
                    "metadata": canonical_json(row["metadata"]) if row["metadata"] else "{}",
                    "before": None if change.before is None else canonical_json(change.before),
                    "after": None if change.after is None else canonical_json(change.after),
                }
                row["digest"] = sha256(canonical_spliced(row, encoded).encode()).hexdigest()
            else:
                encoded, row["digest"] = fast
            row["occurred_at"] = now
            row[ENCODED] = encoded
            rows.append(row)
        return rows

    def _cross_tenant(self, change: Change, acting: str) -> None:
        if self.cross_tenant == "refuse":
            raise CrossTenantWrite(
                f"a change to {change.entity_type} {change.entity_id} of tenant "
                f"{change.tenant_id!r} was made in tenant {acting!r}'s context; "
                "Auditor(cross_tenant='refuse') does not allow that"
            )

    def _context_fields(self, ctx: RequestContext | None) -> dict[str, Any]:
        enricher: Enrichment | None
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

    def write_with_commit(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> bool:
        """Hand the rows of a commit's flush to that COMMIT where the driver can
        (see drivers/send_with_commit.py); otherwise write them now. True if held."""
        if rows and self.drivers(connection).hold_for_commit(connection, rows):
            return True
        self.write(connection, rows)
        return False

    def write_held(self, connection: Connection) -> None:
        """Write now what a driver holds for ``connection``'s COMMIT (a session
        joined to an outer transaction commits without one)."""
        self.drivers(connection).write_held(connection)

    def drop_held(self, connection: Connection) -> None:
        """Forget what is held for ``connection``: its transaction rolled back."""
        self.drivers(connection).drop_held(connection)

    def write(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows`` on ``connection`` now, in its transaction."""
        if rows:
            self.drivers(connection).insert(connection, rows)
