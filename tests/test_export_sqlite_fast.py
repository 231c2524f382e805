"""The SQLite CSV export (lines built in SQL) against the Python path, byte for byte.

Real SQLite files, rows inserted with the table's own types, plus rows written
as raw text the way other tools might have stored them (those must take the
Python path and still come out the same).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import random
from typing import Any

import pytest
import sqlalchemy as sa

from whodid import ALL_TENANTS, Auditor
from whodid.export import formats as export
from whodid.store import query
from whodid.store.drivers import sqlite as sqlite_driver
from whodid.store.drivers.sqlite import sqlite_csv
from whodid.store.schema import entries

T0 = dt.datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)

TRICKY = [
    None,
    "",
    "plain",
    "=SUM(1)",
    "+1",
    "-1",
    "@x",
    "\tTab",
    "\rCR",
    "\nLF first",
    "a,b",
    'say "hi"',
    '"',
    "line\nbreak",
    "cr\rinside",
    "crlf\r\nend",
    "Zürich ✓ 😀",
    "=ü",
    " leading space",
    "trailing space ",
    "'already quoted",
    "=",
    "-",
    ",",
    "a\x1fb",
    "nul\x00,after",
    "0123",
    'ÄÖÜ,"="',
]

JSON_VALUES: list[Any] = [
    None,
    {},
    [],
    {"note": "=SUM(1)", "ü": "ß"},
    {"text": 'line\nbreak, "quoted"\r\t'},
    ["a", 1, 2.5, True, None],
    "-just a string",
    -1,
    0,
    True,
    {"nested": {"emoji": "😀", "comma": ","}},
]


def _row(i: int, rnd: random.Random, **over: Any) -> dict[str, Any]:
    def pick() -> Any:
        return rnd.choice(TRICKY)

    row: dict[str, Any] = {
        "id": f"log_{i:026d}",
        "tenant_id": rnd.choice(["org_1", "org_2", None, "=org"]),
        "occurred_at": T0 + dt.timedelta(seconds=rnd.randrange(-(10**6), 10**6), microseconds=i),
        "action": rnd.choice(["customer.create", "payment.refund", "=cmd|' /C calc'!A0"]),
        "feature": rnd.choice(["customer", "payment", "-feat"]),
        "operation": rnd.choice(["create", "refund", "+op"]),
        "entity_type": pick(),
        "entity_id": pick(),
        "actor_type": rnd.choice(["user", "api_key", "system"]),
        "actor_id": rnd.choice(["usr_1", "usr_2", "key_1", "@usr"]),
        "actor_label": pick(),
        "passkey": rnd.random() < 0.5,
        "ip": rnd.choice(["203.0.113.9", None, "::1", "-1"]),
        "country": rnd.choice(["DE", None, "=X"]),
        "user_agent": pick(),
        "client": rnd.choice(JSON_VALUES),
        "request_id": rnd.choice(["req_1", "req_2", None, "+req"]),
        "metadata": rnd.choice([v for v in JSON_VALUES if v is not None]),
        "before": rnd.choice(JSON_VALUES),
        "after": rnd.choice(JSON_VALUES),
        "digest": pick() or "0" * 64,
    }
    row.update(over)
    return row


@pytest.fixture
def auditor(sqlite_url: str) -> Auditor:
    auditor = Auditor(sqlite_url)
    auditor.create_all()
    return auditor


def _insert(auditor: Auditor, rows: list[dict[str, Any]]) -> None:
    assert auditor.engine is not None
    with auditor.engine.begin() as conn:
        conn.execute(entries.insert(), rows)


def _python_csv(auditor: Auditor, **filters: Any) -> bytes:
    assert auditor.engine is not None
    out = io.BytesIO()
    with auditor.engine.connect() as conn:
        spec = query.Filters.build(**filters)
        export.write(out, query.iter_export_rows(conn, spec), "csv")
    return out.getvalue()


def _fast_csv(auditor: Auditor, *, text: bool = False, **filters: Any) -> bytes:
    assert auditor.engine is not None
    out: Any = io.StringIO() if text else io.BytesIO()
    with auditor.engine.connect() as conn:
        spec = query.Filters.build(**filters)
        count = sqlite_csv(conn, query.export_where(conn, spec), out, export.lines)
    assert count is not None, "the fast path must be available on this Python"
    data = out.getvalue()
    body = data.encode("utf-8") if text else data
    return bytes(body)


def _same(auditor: Auditor, **filters: Any) -> bytes:
    expected = _python_csv(auditor, **filters)
    assert _fast_csv(auditor, **filters) == expected, filters
    assert _fast_csv(auditor, text=True, **filters) == expected
    rows = query.iter_export_rows(auditor.engine.connect(), query.Filters.build(**filters))  # type: ignore[union-attr]
    expected_count = len(list(rows))
    via_auditor = io.BytesIO()
    # The export records itself, but reads the log as it was when it began.
    count = auditor.export(via_auditor, "csv", **{"tenant_id": ALL_TENANTS, **filters})
    assert via_auditor.getvalue() == expected
    assert count == expected_count
    return expected


def test_tricky_values_every_filter(auditor: Auditor) -> None:
    rnd = random.Random(5)
    _insert(auditor, [_row(i, rnd) for i in range(3000)])
    everything = _same(auditor)
    assert everything.count(b"\n") > 3000  # header + rows (+ newlines inside cells)
    assert b"'=SUM(1)" in everything and b"'+1" in everything and b"'@x" in everything
    for filters in [
        {"tenant_id": "org_1"},
        {"tenant_id": None},
        {"tenant_id": "=org"},
        {"action": "payment.refund"},
        {"action": ["customer.create", "=cmd|' /C calc'!A0"]},
        {"feature": "-feat", "operation": "+op"},
        {"actor_type": "api_key"},
        {"actor_id": "@usr"},
        {"user_id": "usr_1"},
        {"api_key_id": "key_1"},
        {"entity_type": "Zürich ✓ 😀"},
        {"entity_id": "a,b"},
        {"request_id": "req_2"},
        {"ip": "::1"},
        {"q": "zürich"},
        {"q": "50%_/"},
        {"q": '"'},
        {"start": T0},
        {"end": T0 - dt.timedelta(days=3)},
        {
            "start": T0 - dt.timedelta(days=2),
            "end": T0 + dt.timedelta(days=1),
            "tenant_id": "org_2",
        },
        {"start": "2025-03-01T00:00:00+02:00", "end": "2025-03-05"},
        {"tenant_id": "nobody"},
    ]:
        _same(auditor, **filters)


def test_out_of_order_and_sparse_keys(auditor: Auditor) -> None:
    """Time order that is not seq order (so batches are read by key), and a filter
    matching rows far apart (so ranges are sparse); both across several batches."""
    rnd = random.Random(11)
    n = 3 * sqlite_driver._BATCH + 17
    rows = [_row(i, rnd, occurred_at=T0 + dt.timedelta(seconds=i)) for i in range(n)]
    # Mostly in order, with blocks shuffled and equal timestamps (ties broken by seq).
    for block in range(0, n, 700):
        part = rows[block : block + 700]
        times = [r["occurred_at"] for r in part]
        rnd.shuffle(times)
        for r, t in zip(part, times, strict=True):
            r["occurred_at"] = t
    for r in rows[::50]:
        r["occurred_at"] = T0
    for r in rows[::97]:
        r["tenant_id"] = "org_sparse"
    _insert(auditor, rows)
    _same(auditor)
    _same(auditor, tenant_id="org_sparse")
    _same(auditor, start=T0 + dt.timedelta(seconds=100), end=T0 + dt.timedelta(seconds=5000))


def test_in_order_log_across_batches(auditor: Auditor) -> None:
    rnd = random.Random(3)
    n = 2 * sqlite_driver._BATCH + 1
    _insert(auditor, [_row(i, rnd, occurred_at=T0 + dt.timedelta(seconds=i)) for i in range(n)])
    body = _same(auditor)
    assert body.splitlines()[0].startswith(b"id,tenant_id,occurred_at,")
    _same(auditor, tenant_id="org_1")


def test_timezones_and_odd_stored_timestamps(auditor: Auditor) -> None:
    """Aware values in other zones, naive ones, and timestamps stored as raw text in
    shapes SQLAlchemy reads but does not write (they take the Python path)."""
    rnd = random.Random(2)
    berlin = dt.timezone(dt.timedelta(hours=2))
    rows = [
        _row(0, rnd, occurred_at=dt.datetime(2025, 3, 1, 14, 0, 0, 5, tzinfo=berlin)),
        _row(1, rnd, occurred_at=dt.datetime(2025, 3, 1, 12, 0, 0)),  # naive
        _row(2, rnd, occurred_at=dt.datetime(1, 1, 1, 0, 0, 0, tzinfo=dt.UTC)),
        _row(3, rnd, occurred_at=dt.datetime(9999, 12, 31, 23, 59, 59, 999999)),
        _row(4, rnd, occurred_at=dt.datetime(2025, 3, 1, 12, 0, 0, 0, tzinfo=dt.UTC)),
    ]
    _insert(auditor, rows)
    _same(auditor)
    raw = [
        "2025-03-01 10:00:00",  # no fraction
        "2025-03-01T10:00:00.000001",  # T separator
        "2025-03-01 10:00:00.123+01",  # offset, 26 characters like the stored form
        "2025-03-01 10:00:00.5+00:00",
        "2025-03-01 23:30:00-02:00",
    ]
    assert auditor.engine is not None
    # Rows are write-once (UPDATE is rejected), so store the odd text directly.
    with auditor.engine.begin() as conn:
        for i, text in enumerate(raw):
            row = _row(200 + i, rnd)
            row["occurred_at"] = text
            cols = ", ".join(f'"{k}"' for k in row)
            marks = ", ".join(f":{k}" for k in row)
            params = {
                k: (
                    json.dumps(v)
                    if k in ("client", "metadata", "before", "after") and v is not None
                    else v
                )
                for k, v in row.items()
            }
            conn.execute(sa.text(f"INSERT INTO whodid_entries ({cols}) VALUES ({marks})"), params)
    body = _same(auditor)
    assert b"2025-03-01T09:00:00.123000Z" in body  # the +01 offset, converted by Python
    _same(auditor, start=dt.datetime(2025, 3, 1, 9, tzinfo=dt.UTC))


def test_passkey_stored_as_other_numbers(auditor: Auditor) -> None:
    rnd = random.Random(4)
    _insert(auditor, [_row(i, rnd) for i in range(20)])
    assert auditor.engine is not None
    with auditor.engine.begin() as conn:
        for i, value in enumerate([2, -1, 0, 1]):
            row = _row(50 + i, rnd)
            row.update(
                passkey=value,
                occurred_at="2025-03-01 10:00:00.000000",
                metadata="{}",
                client=None,
                before=None,
                after=None,
            )
            cols = ", ".join(f'"{k}"' for k in row)
            marks = ", ".join(f":{k}" for k in row)
            conn.execute(sa.text(f"INSERT INTO whodid_entries ({cols}) VALUES ({marks})"), row)
    body = _same(auditor)
    assert body.count(b",true,") + body.count(b",false,") >= 24


def test_empty_log(auditor: Auditor) -> None:
    body = _same(auditor)
    assert body.count(b"\n") == 1


def test_connection_inside_a_transaction_sees_its_own_rows(auditor: Auditor) -> None:
    """A Connection with uncommitted rows: the export runs inside its transaction."""
    rnd = random.Random(8)
    _insert(auditor, [_row(i, rnd) for i in range(50)])
    assert auditor.engine is not None
    with auditor.engine.connect() as conn:
        conn.execute(
            entries.insert(), [_row(1000 + i, rnd) for i in range(2 * sqlite_driver._BATCH)]
        )
        spec = query.Filters.build()
        expected = io.BytesIO()
        export.write(expected, query.iter_export_rows(conn, spec), "csv")
        fast = io.BytesIO()
        count = sqlite_csv(conn, query.export_where(conn, spec), fast, export.lines)
        assert count == 50 + 2 * sqlite_driver._BATCH
        assert fast.getvalue() == expected.getvalue()
        conn.rollback()


def test_in_memory_database() -> None:
    auditor = Auditor(sa.create_engine("sqlite://"))
    auditor.create_all()
    rnd = random.Random(9)
    _insert(auditor, [_row(i, rnd) for i in range(300)])
    _same(auditor)


def test_progress_counts_every_entry(auditor: Auditor) -> None:
    rnd = random.Random(1)
    _insert(auditor, [_row(i, rnd) for i in range(sqlite_driver._BATCH + 5)])
    seen: list[int] = []
    count = auditor.export(io.BytesIO(), "csv", progress=seen.append, tenant_id=ALL_TENANTS)
    assert sum(seen) == count == sqlite_driver._BATCH + 5


def test_utf16_database_takes_the_python_path(tmp_path: Any) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/utf16.db")

    @sa.event.listens_for(engine, "connect")
    def _utf16(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA encoding = 'UTF-16le'")

    auditor = Auditor(engine)
    auditor.create_all()
    rnd = random.Random(6)
    _insert(auditor, [_row(i, rnd) for i in range(200)])
    with engine.connect() as conn:
        where = query.export_where(conn, query.Filters.build())
        assert sqlite_csv(conn, where, io.BytesIO(), export.lines) is None
    expected = _python_csv(auditor)
    out = io.BytesIO()
    assert auditor.export(out, "csv", tenant_id=ALL_TENANTS) == 200
    assert out.getvalue() == expected
