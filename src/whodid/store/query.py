"""Reading the log: validated filters, keyset pagination, detail and related entries.

Pages are ordered newest first by ``(occurred_at, seq)`` and continue from an
opaque cursor holding the last row's key, so page 10,000 costs what page 1
costs (an index range scan, no OFFSET) and entries that arrive between pages
neither shift nor repeat what follows.

A cursor also carries a fingerprint of the filters (tenant included) it was
made for: used with other filters it is refused, as is any cursor whose
checksum does not match. Forging one gains nothing: the tenant condition is
part of every query, whatever the cursor says.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import ipaddress
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from whodid.entry.fields import COLUMNS, JSON_COLUMNS, Entry, iso, utc
from whodid.errors import InvalidQuery
from whodid.store.schema import entries
from whodid.store.search import Matches
from whodid.tenancy import ALL_TENANTS

MAX_SPAN = dt.timedelta(days=366)
MAX_LIMIT = 200
ACTOR_TYPES = ("user", "api_key", "system", "anonymous")
MAX_VALUE = 400


@dataclass(frozen=True)
class Filters:
    """The filters of a list or export, checked on construction."""

    tenant_id: Any = ALL_TENANTS
    action: tuple[str, ...] = ()
    feature: str | None = None
    operation: str | None = None
    actor_type: str | None = None
    actor_id: str | None = None
    user_id: str | None = None
    api_key_id: str | None = None
    entity_type: str | None = None
    entity_id: str | None = None
    request_id: str | None = None
    ip: str | None = None
    q: str | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    #: Only entries up to this seq: an export reads the log as it was when it began.
    upto_seq: int | None = None

    #: How the caller names each filter in messages (HTTP says start_date, the CLI --since).
    labels: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, *, labels: Mapping[str, str] | None = None, **given: Any) -> Filters:
        """Check ``given`` and return its Filters.

        Args:
            labels: the caller's names of the filters, used in error messages
                (``{"start": "start_date"}``).
            **given: filter values; see :meth:`whodid.Auditor.list`.

        Raises:
            InvalidQuery: a filter is unknown or its value is not usable.
        """
        labels = dict(labels or {})

        def label(name: str) -> str:
            return labels.get(name, name)

        names = {f.name for f in fields(cls)} - {"labels"}
        unknown = sorted(set(given) - names)
        if unknown:
            raise InvalidQuery(
                f"unknown filter {', '.join(unknown)}; known filters: {', '.join(sorted(names))}"
            )
        values: dict[str, Any] = {"labels": labels}
        for name, value in given.items():
            if value is None or (name == "tenant_id" and value is ALL_TENANTS):
                values[name] = value
            elif name == "action":
                if isinstance(value, str):
                    actions = [value]
                elif isinstance(value, list | tuple | set | frozenset):
                    actions = list(value)
                else:
                    raise InvalidQuery(f"{label(name)} must be a string or a list of strings")
                values[name] = tuple(_text(label(name), a) for a in actions if a)
            elif name in ("start", "end"):
                values[name] = _datetime(label(name), value, end_of_day=name == "end")
            elif name == "ip":
                values[name] = _ip(label(name), value)
            elif name == "upto_seq":
                if not isinstance(value, int) or isinstance(value, bool):
                    raise InvalidQuery(f"{label(name)} must be an integer")
                values[name] = value
            else:
                values[name] = _text(label(name), value)
        filters = cls(**values)
        if filters.actor_type is not None and filters.actor_type not in ACTOR_TYPES:
            raise InvalidQuery(
                f"{label('actor_type')} {filters.actor_type!r} is not one of "
                f"{', '.join(ACTOR_TYPES)}"
            )
        if filters.start and filters.end and filters.end < filters.start:
            raise InvalidQuery(
                f"the range ends ({label('end')} {iso(filters.end)}) before it starts "
                f"({label('start')} {iso(filters.start)})"
            )
        return filters

    def window(self, now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
        """The date range of a list query: at most 366 days, the last 366 by default."""
        now = now or dt.datetime.now(dt.UTC)
        end = self.end or now
        start = self.start or (end - MAX_SPAN)
        if end - start > MAX_SPAN:
            raise InvalidQuery(
                f"a list query spans at most 366 days, this one spans {(end - start).days}; "
                f"narrow {self.labels.get('start', 'start')}/{self.labels.get('end', 'end')}, "
                "or use export for longer ranges"
            )
        return start, end

    def conditions(self) -> list[Any]:
        """WHERE conditions for every filter given (the date range excepted)."""
        c = entries.c
        where: list[Any] = []
        if self.tenant_id is not ALL_TENANTS:
            where.append(
                c.tenant_id.is_(None) if self.tenant_id is None else c.tenant_id == self.tenant_id
            )
        if self.action:
            where.append(
                c.action.in_(self.action) if len(self.action) > 1 else c.action == self.action[0]
            )
        for name in (
            "feature",
            "operation",
            "actor_type",
            "actor_id",
            "entity_type",
            "entity_id",
            "request_id",
            "ip",
        ):
            value = getattr(self, name)
            if value is not None:
                where.append(c[name] == value)
        if self.user_id is not None:
            where += [c.actor_type == "user", c.actor_id == self.user_id]
        if self.api_key_id is not None:
            where += [c.actor_type == "api_key", c.actor_id == self.api_key_id]
        if self.upto_seq is not None:
            where.append(c.seq <= self.upto_seq)
        if self.q:
            where.append(Matches("%" + re.sub(r"([%_/])", r"/\1", self.q) + "%"))
        return where

    def fingerprint(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "labels"}
        data["tenant_id"] = "*" if self.tenant_id is ALL_TENANTS else self.tenant_id
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def as_dict(self) -> dict[str, Any]:
        """The filters given, JSON-ready (for the export's own audit entry)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("labels", "upto_seq"):
                continue
            value = getattr(self, f.name)
            if value is None or value is ALL_TENANTS or value == ():
                continue
            out[f.name] = iso(value) if isinstance(value, dt.datetime) else value
        return out


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str | int):
        raise InvalidQuery(f"{name} must be a string, got {type(value).__name__}")
    text = str(value)
    if len(text) > MAX_VALUE:
        raise InvalidQuery(f"{name} is longer than {MAX_VALUE} characters")
    if "\x00" in text:
        raise InvalidQuery(f"{name} contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidQuery(f"{name} is not valid text (it holds a lone surrogate)") from None
    return text


# Entries cannot predate the epoch; far-future bounds would overflow the
# window arithmetic. Anything outside is a typo.
_EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_LATEST = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)


def _ip(name: str, value: Any) -> str:
    text = _text(name, value)
    try:
        # The form the middleware stores: compressed, lower-case, IPv4 unmapped.
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        raise InvalidQuery(
            f"{name} {text[:40]!r} is not an IP address, e.g. 203.0.113.7 or 2001:db8::1"
        ) from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def _datetime(name: str, value: Any, *, end_of_day: bool = False) -> dt.datetime:
    """``value`` as an aware UTC datetime.

    A date without a time (``2026-03-31`` or a ``date``) is that UTC day: its
    first instant as a start, its last as an end, so an end date is inclusive.
    """
    try:
        parsed = _parse_datetime(name, value)
        if end_of_day and _is_date_only(value):
            parsed += _DAY - dt.timedelta(microseconds=1)
    except OverflowError:
        parsed = _LATEST + MAX_SPAN  # fails the range check below
    if not _EARLIEST <= parsed <= _LATEST:
        raise InvalidQuery(f"{name} must lie between 1970 and 9000, got {str(value)[:40]!r}")
    return parsed


_DAY = dt.timedelta(days=1)


def _is_date_only(value: Any) -> bool:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return True
    if not isinstance(value, str):
        return False
    try:
        dt.date.fromisoformat(value.strip())
    except ValueError:
        return False
    return True


def _parse_datetime(name: str, value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return utc(value)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise InvalidQuery(
                f"{name} {value[:40]!r} is not an ISO 8601 date or time, "
                "e.g. 2026-03-01 or 2026-03-01T14:32:00Z"
            ) from None
        return utc(parsed)
    raise InvalidQuery(f"{name} must be a datetime or an ISO 8601 string")


# -- cursors ----------------------------------------------------------------


def encode_cursor(entry: Entry, filters: Filters) -> str:
    payload = json.dumps([iso(entry.occurred_at), entry.seq, filters.fingerprint()])
    check = hashlib.sha256(payload.encode()).hexdigest()[:12]
    return base64.urlsafe_b64encode(f"{payload}|{check}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, filters: Filters) -> tuple[dt.datetime, int]:
    bad = InvalidQuery(
        "cursor is not valid: pass next_cursor exactly as a previous page returned it, "
        "with the same filters"
    )
    if not isinstance(cursor, str) or len(cursor) > 300:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        payload, check = raw.rsplit("|", 1)
        if hashlib.sha256(payload.encode()).hexdigest()[:12] != check:
            raise bad
        when, seq, fingerprint = json.loads(payload)
        occurred = _datetime("cursor", when)
    except (ValueError, binascii.Error, TypeError, UnicodeDecodeError, AttributeError):
        raise bad from None
    if (
        fingerprint != filters.fingerprint()
        or not isinstance(seq, int)
        or isinstance(seq, bool)
        or not 0 <= seq < 2**63
    ):
        raise bad
    return occurred, seq


# -- reading ----------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    entries: list[Entry] = field(default_factory=list)
    next_cursor: str | None = None


def stored_time(value: dt.datetime, conn: Connection) -> Any:
    """``value`` in the shape the database compares stored times with."""
    # SQLite stores naive UTC text; compare with the same shape.
    return value.replace(tzinfo=None) if conn.dialect.name == "sqlite" else value


def list_page(
    conn: Connection, filters: Filters, limit: int = 50, cursor: str | None = None
) -> Page:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    start, end = filters.window()
    c = entries.c
    where = filters.conditions()
    position = None
    if cursor is not None:
        at, seq = decode_cursor(cursor, filters)
        # SQLite bounds its index scan by the plain upper bound only, not by
        # the row value below, so make that bound the cursor's time too.
        end = min(end, at)
        # A row-value comparison, which both databases turn into an index
        # range; the equivalent OR form makes PostgreSQL filter row by row.
        position = sa.tuple_(c.occurred_at, c.seq) < sa.tuple_(
            stored_time(at, conn), sa.literal(seq)
        )
    where += [c.occurred_at >= stored_time(start, conn), c.occurred_at <= stored_time(end, conn)]
    if position is not None:
        where.append(position)
    stmt = (
        sa.select(entries)
        .where(*where)
        .order_by(c.occurred_at.desc(), c.seq.desc())
        .limit(limit + 1)
    )
    rows = [Entry.from_row(r) for r in conn.execute(stmt).mappings()]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1], filters) if more else None)


def iter_export_rows(
    conn: Connection, filters: Filters, batch: int = 5000
) -> Iterator[tuple[Any, ...]]:
    """Every match as a tuple in export column order, oldest first, no span limit.

    Streamed with a server-side cursor, so memory stays flat; JSON columns
    come back as JSON text, for the export to pass through undecoded.
    """
    c = entries.c
    columns = [sa.cast(c[n], sa.Text) if n in JSON_COLUMNS else c[n] for n in COLUMNS]
    stmt = (
        sa.select(*columns).where(*_unbounded_where(conn, filters)).order_by(c.occurred_at, c.seq)
    )
    result = conn.execution_options(stream_results=True, yield_per=batch).execute(stmt)
    for row in result:
        yield tuple(row)


def export_where(conn: Connection, filters: Filters) -> list[Any]:
    """Conditions of an export: every filter, the dates only if given (no span limit)."""
    return _unbounded_where(conn, filters)


def _unbounded_where(conn: Connection, filters: Filters) -> list[Any]:
    where = filters.conditions()
    if filters.start:
        where.append(entries.c.occurred_at >= stored_time(filters.start, conn))
    if filters.end:
        where.append(entries.c.occurred_at <= stored_time(filters.end, conn))
    return where


def count_entries(conn: Connection, filters: Filters) -> int:
    stmt = sa.select(sa.func.count()).select_from(entries).where(*_unbounded_where(conn, filters))
    return int(conn.execute(stmt).scalar_one())


_ENTRY_ID = re.compile(r"log_[0-9A-HJKMNP-TV-Z]{26}")


def get_entry(conn: Connection, entry_id: str, tenant_id: Any) -> Entry | None:
    row = entry_row(conn, entry_id, tenant_id)
    return None if row is None else Entry.from_row(row)


def related_entries(
    conn: Connection, entry: Entry, tenant_id: Any, limit: int = 100
) -> list[Entry]:
    """Entries of the same request, and of the same chain (``metadata.chain_id``)."""
    c = entries.c
    links = []
    if entry.request_id:
        links.append(c.request_id == entry.request_id)
    chain = entry.metadata.get("chain_id") if isinstance(entry.metadata, dict) else None
    if isinstance(chain, str):
        if conn.dialect.name == "postgresql":
            links.append(c["metadata"]["chain_id"].as_string() == chain)
        else:
            links.append(sa.func.json_extract(c["metadata"], "$.chain_id") == chain)
    if not links:
        return []
    stmt = (
        sa.select(entries)
        .where(sa.or_(*links), c.id != entry.id, *Filters(tenant_id=tenant_id).conditions())
        .order_by(c.occurred_at, c.seq)
        .limit(limit)
    )
    return [Entry.from_row(r) for r in conn.execute(stmt).mappings()]


# A workspace has tens of event names, not thousands; the cap only bounds the
# answer if an application puts ids into action names by mistake.
MAX_ACTIONS = 1000


def distinct_actions(conn: Connection, tenant_id: Any) -> list[str]:
    """Every action name the tenant's log holds, sorted (at most MAX_ACTIONS)."""
    c = entries.c
    stmt = (
        sa.select(c.action)
        .where(*Filters(tenant_id=tenant_id).conditions())
        .distinct()
        .order_by(c.action)
        .limit(MAX_ACTIONS)
    )
    return [str(action) for action in conn.execute(stmt).scalars()]


def entry_row(conn: Connection, entry_id: str, tenant_id: Any) -> dict[str, Any] | None:
    """The stored row of an entry (every field), or None (also another tenant's)."""
    # Anything that is not an entry id cannot name one: no query needed, and
    # no odd bytes (NUL, surrogates) ever reach the driver.
    if not isinstance(entry_id, str) or not _ENTRY_ID.fullmatch(entry_id):
        return None
    stmt = sa.select(entries).where(entries.c.id == entry_id)
    row = conn.execute(stmt.where(*Filters(tenant_id=tenant_id).conditions())).mappings().first()
    return None if row is None else dict(row)


def export_entry_rows(conn: Connection, filters: Filters) -> list[dict[str, Any]]:
    """The stored rows an export of ``filters`` writes, in its order."""
    c = entries.c
    stmt = sa.select(entries).where(*_unbounded_where(conn, filters)).order_by(c.occurred_at, c.seq)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def last_seq(conn: Connection) -> int:
    """The highest seq in the log (0 when empty)."""
    top = conn.execute(sa.select(sa.func.max(entries.c.seq))).scalar()
    return int(top or 0)


def distinct_tenants(conn: Connection, filters: Filters) -> list[str | None]:
    """The tenants that have entries matching ``filters`` (no date limit)."""
    c = entries.c
    stmt = sa.select(c.tenant_id).where(*_unbounded_where(conn, filters)).distinct()
    return list(conn.execute(stmt).scalars())


def connect(bind: Engine | Connection) -> Any:
    """A connection context for ``bind``, which may already be a connection."""
    return nullcontext(bind) if isinstance(bind, Connection) else bind.connect()
