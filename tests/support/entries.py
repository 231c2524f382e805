"""The one entry factory of the tests: an entry of any shape, at any time."""

from __future__ import annotations

import datetime as dt
from typing import Any

from whodid import Actor, Auditor
from whodid.context import RequestContext
from whodid.testing import Change, entry_rows, write_rows

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
ADA = Actor.user("usr_1", "ada@example.com")


def entry_row(
    auditor: Auditor,
    *,
    days_ago: float = 0,
    at: dt.datetime | None = None,
    tenant: str | None = "org_1",
    actor: Actor = ADA,
    action: str = "customer.create",
    entity: tuple[str, str] = ("customer", "cus_1"),
    request_id: str | None = None,
    ip: str | None = "203.0.113.9",
    metadata: dict[str, Any] | None = None,
    user_agent: str | None = "Mozilla/5.0 Firefox/120.0",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One entry row, ``days_ago`` before the session's NOW (or ``at``)."""
    feature, _, operation = action.partition(".")
    ctx = RequestContext(
        actor=actor,
        tenant_id=tenant,
        passkey=False,
        ip=ip,
        user_agent=user_agent,
        request_id=request_id,
    )
    change = Change(
        feature=feature,
        operation=operation,
        action=action,
        entity_type=entity[0],
        entity_id=entity[1],
        metadata=metadata or {},
        before=before,
        after=after,
    )
    when = at or NOW - dt.timedelta(days=days_ago)
    return entry_rows(auditor, [change], ctx, occurred_at=when)[0]


def put(auditor: Auditor, **fields: Any) -> None:
    """Write one entry of :func:`entry_row`'s fields."""
    write_rows(auditor, [entry_row(auditor, **fields)])


def exported(auditor: Auditor) -> list[dict[str, Any]]:
    """The log as `whodid export --format ndjson` writes it, decoded, in seq order,
    without the export's own `audit_log.*` entries."""
    import json

    from whodid import ALL_TENANTS

    text = "".join(auditor.iter_export(tenant_id=ALL_TENANTS, format="ndjson"))
    entries = [json.loads(line) for line in text.splitlines()]
    ordered = sorted(entries, key=lambda e: e["seq"])
    return [e for e in ordered if not e["action"].startswith("audit_log.")]
