"""Retention: how long each tenant's entries are kept, and the purge that enforces it.

Purging is the only way rows leave the log. It opens the purge window (the
one row the delete trigger accepts), deletes what is past the horizon, closes
the window, and in the same transaction writes a signed purge record listing
exactly what went, plus an ``audit_log.purge`` entry. ``verify`` then accepts
those rows' absence and says which range was purged.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from whodid.entry.fields import iso, utc
from whodid.errors import ConfigurationError, InvalidQuery
from whodid.store import feed, partitions
from whodid.store.query import Filters
from whodid.store.schema import SQLITE_PURGE_FUNCTION, entries, purge_window, refuse_purge
from whodid.store.writer import Change
from whodid.tenancy import ALL_TENANTS

log = logging.getLogger("whodid.retention")

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

_DURATION = re.compile(r"^\s*(\d+)\s*([dwy])\s*$")
# A year of retention must never be a day short, so a "year" is 366 days.
_UNIT_DAYS = {"d": 1, "w": 7, "y": 366}
UNLIMITED = ("unlimited", "forever", "never", "none")


def parse_duration(value: str | dt.timedelta | int | None) -> dt.timedelta | None:
    """``"365d"``, ``"3y"``, ``"12w"``, a timedelta, days as int; None/"unlimited" = forever."""
    if value is None or isinstance(value, dt.timedelta):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return dt.timedelta(days=value)
    if isinstance(value, str):
        if value.strip().lower() in UNLIMITED:
            return None
        match = _DURATION.match(value.lower())
        if match:
            return dt.timedelta(days=int(match[1]) * _UNIT_DAYS[match[2]])
    raise ConfigurationError(
        f"retention {value!r} is not a duration; use e.g. '365d', '3y', '12w' or 'unlimited'"
    )


@dataclass(frozen=True)
class Retention:
    """Per-tenant retention periods (e.g. plans: 1, 3, 7 years, unlimited).

    ``default`` applies to tenants not listed; None keeps entries forever.
    """

    default: dt.timedelta | None = None
    tenants: Mapping[str, dt.timedelta | None] = field(default_factory=dict)

    @classmethod
    def of(cls, default: Any = None, tenants: Mapping[str, Any] | None = None) -> Retention:
        return cls(
            parse_duration(default),
            {t: parse_duration(v) for t, v in (tenants or {}).items()},
        )

    def period(self, tenant_id: str | None) -> dt.timedelta | None:
        if tenant_id is not None and tenant_id in self.tenants:
            return self.tenants[tenant_id]
        return self.default


@dataclass(frozen=True)
class Purged:
    """What one purge removed: whose entries, older than what, how many, and
    the number of the signed purge checkpoint (None without a signing key)."""

    tenant_id: str | None
    before: dt.datetime
    rows: int
    checkpoint: int | None
    all_tenants: bool = False
    #: Per log stream, how many of the purged entries it had not shipped yet.
    unshipped: dict[str, int] = field(default_factory=dict)

    def change(self) -> Change:
        """The ``audit_log.purge`` entry that records this purge."""
        return Change(
            feature="audit_log",
            operation="purge",
            action="audit_log.purge",
            metadata={
                "before": iso(self.before),
                "tenant_id": self.tenant_id,
                "all_tenants": self.all_tenants,
                "rows": self.rows,
                "checkpoint": self.checkpoint,
                **({"unshipped_by_stream": self.unshipped} if self.unshipped else {}),
            },
        )


def plan_purge(
    retention: Retention | None,
    before: dt.datetime | None,
    tenant_id: Any,
    tenants: Callable[[], list[str | None]],
    now: dt.datetime | None = None,
) -> list[tuple[Any, dt.datetime]]:
    """The (tenant, horizon) pairs a purge will apply, each checked.

    Args:
        retention: the configured periods (None: no retention configured).
        before: an explicit horizon; without it, each tenant's period.
        tenant_id: one tenant, None (the entries with no tenant) or ALL_TENANTS.
        tenants: every tenant in the log, asked only when needed.

    Raises:
        InvalidQuery: a horizon in the future, or one cutting into a period.
        ConfigurationError: no ``before`` and no retention configured.
    """
    now = now or dt.datetime.now(dt.UTC)
    every = tenant_id is ALL_TENANTS
    plan: list[tuple[Any, dt.datetime]] = []
    if before is not None:
        plan = [(tenant_id, utc(before))]
    elif retention is None:
        raise ConfigurationError(
            "purge() without before= needs Auditor(retention=Retention.of('365d', {...}))"
        )
    else:
        for tenant in tenants() if every else [tenant_id]:
            period = retention.period(tenant)
            if period is not None:
                plan.append((tenant, now - period))
    for tenant, horizon in plan:
        check_horizon(None, tenant, horizon, now)  # never a future horizon
        for each in tenants() if tenant is ALL_TENANTS else [tenant]:
            check_horizon(retention, each, horizon, now)
    return plan


def check_horizon(
    retention: Retention | None, tenant_id: str | None, before: dt.datetime, now: dt.datetime
) -> None:
    """Refuse a purge whose horizon is in the future, or cuts into a retention period."""
    if before > now:
        raise InvalidQuery(
            f"purging before {iso(before)} would delete entries written from now on: a purge "
            f"horizon is never in the future (now is {iso(now)})"
        )
    if retention is None:
        return
    period = retention.period(tenant_id)
    who = f"tenant {tenant_id!r}" if tenant_id is not None else "this log"
    if period is None:
        raise InvalidQuery(
            f"{who} keeps its entries forever (retention: unlimited); nothing may be purged"
        )
    horizon = now - period
    if before > horizon:
        raise InvalidQuery(
            f"purging before {iso(before)} would delete entries of {who} younger than its "
            f"retention of {period.days} days; the earliest allowed horizon is {iso(horizon)}"
        )


@contextlib.contextmanager
def _purge_door(conn: Connection, before: dt.datetime, tenant_id: str | None) -> Iterator[None]:
    """Let the delete triggers pass rows older than ``before`` (of one tenant, or of
    any when None: the DELETE's own WHERE narrows it), here only.

    SQLite: the trigger asks a function that only this connection has, only now.
    PostgreSQL: a purge window row, plus a transaction-local setting that plain
    DML cannot make (the trigger also requires the table owner's role).
    """
    if conn.dialect.name == "sqlite":
        raw: Any = conn.connection.dbapi_connection
        horizon = before.isoformat(" ", "microseconds")  # the stored text's shape

        def purging(occurred: Any, tenant: Any) -> int:
            return int(
                isinstance(occurred, str)
                and occurred < horizon
                and (tenant_id is None or tenant == tenant_id)
            )

        raw.create_function(SQLITE_PURGE_FUNCTION, 2, purging)
        try:
            yield
        finally:
            raw.create_function(SQLITE_PURGE_FUNCTION, 2, refuse_purge)
        return
    opened = conn.execute(purge_window.insert().values(before=before, tenant_id=tenant_id))
    key: Any = opened.inserted_primary_key
    window_id = key[0]
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT set_config('whodid.purge', 'on', true)")
    yield
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT set_config('whodid.purge', 'off', true)")
    conn.execute(sa.delete(purge_window).where(purge_window.c.id == window_id))


def purge_rows(
    conn: Connection,
    before: dt.datetime,
    tenant_id: Any,
    private: Ed25519PrivateKey | None,
) -> Purged:
    """Delete entries older than ``before`` and sign for it.

    ``tenant_id`` is one tenant, None (the entries with no tenant) or
    ``ALL_TENANTS``.
    """
    before = utc(before)
    c = entries.c
    every = tenant_id is ALL_TENANTS
    at = before.replace(tzinfo=None) if conn.dialect.name == "sqlite" else before
    where = [c.occurred_at < at, *Filters(tenant_id=tenant_id).conditions()]
    doomed = conn.execute(
        sa.select(c.seq, c.occurred_at, c.digest).where(*where).order_by(c.seq)
    ).all()
    shown = None if every else tenant_id
    if not doomed:
        return Purged(shown, before, 0, None, every)
    lagging = feed.unshipped(conn, where)
    for stream, missed in lagging.items():
        log.warning(
            "purge deletes %d entries log stream %r has not shipped yet; it never will",
            missed,
            stream,
        )
    deleted = dropped = 0
    if every and partitions.is_partitioned(conn):
        # Whole months past the horizon go at once; the rows were read above,
        # so the signed purge record still lists every one of them.
        for name in partitions.expired_partitions(conn, before):
            dropped += conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one()
            partitions.drop_partition(conn, name)
    with _purge_door(conn, at, None if every else tenant_id):
        deleted = dropped + conn.execute(sa.delete(entries).where(*where)).rowcount
    number = None
    if private is not None:
        from whodid.integrity.verify import latest_checkpoint, leaf_bytes, make_checkpoint

        previous = latest_checkpoint(conn)
        leaves = b"".join(leaf_bytes(r.seq, r.occurred_at, r.digest) for r in doomed)
        checkpoint = make_checkpoint(
            conn,
            private,
            "purge",
            leaves,
            previous.hi if previous else 0,
            {"before": iso(before), "tenant_id": shown, "all_tenants": every},
            previous,
        )
        number = checkpoint.number
    return Purged(shown, before, deleted, number, every, lagging)
