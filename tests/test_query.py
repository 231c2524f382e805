"""The query API on SQLite and PostgreSQL: filters, pages, detail, related, export."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
import sqlalchemy as sa

from support.entries import NOW, put
from whodid import ALL_TENANTS, Actor, Auditor, InvalidQuery


@pytest.fixture
def auditor(engine: sa.Engine) -> Auditor:
    auditor = Auditor(engine)
    auditor.create_all()
    return auditor


@pytest.fixture
def log(auditor: Auditor) -> Auditor:
    put(
        auditor,
        days_ago=3,
        action="customer.create",
        entity=("customer", "cus_1"),
        request_id="req_a",
    )
    put(
        auditor,
        days_ago=2,
        action="api_key.create",
        actor=Actor.api_key("key_9", "sk_live_ab"),
        entity=("api_key", "key_10"),
        ip="198.51.100.7",
        metadata={"scope": "payments:write"},
    )
    put(
        auditor,
        days_ago=1,
        action="payment.refund",
        entity=("payment", "pay_123"),
        request_id="req_b",
        metadata={"amount": "5.00", "chain_id": "chk_1"},
    )
    put(
        auditor,
        days_ago=1,
        action="payment.update",
        entity=("payment", "pay_123"),
        request_id="req_b",
    )
    put(
        auditor,
        days_ago=0.5,
        action="receipt.create",
        entity=("receipt", "rct_1"),
        request_id="req_c",
        metadata={"chain_id": "chk_1"},
    )
    put(
        auditor,
        days_ago=0.1,
        action="customer.update",
        tenant="org_2",
        actor=Actor.user("usr_2", "eve@globex.example"),
        entity=("customer", "cus_1"),
    )
    put(auditor, days_ago=400, action="customer.delete", entity=("customer", "cus_old"))
    return auditor


def actions(page) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.action for e in page.entries]


def test_newest_first_within_the_default_366_days(log):
    page = log.list(tenant_id="org_1")
    assert actions(page) == [
        "receipt.create",
        "payment.update",
        "payment.refund",
        "api_key.create",
        "customer.create",
    ]
    assert page.next_cursor is None


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"action": "payment.refund"}, ["payment.refund"]),
        ({"action": ["payment.refund", "receipt.create"]}, ["receipt.create", "payment.refund"]),
        ({"feature": "payment"}, ["payment.update", "payment.refund"]),
        ({"operation": "create"}, ["receipt.create", "api_key.create", "customer.create"]),
        ({"actor_type": "api_key"}, ["api_key.create"]),
        ({"actor_id": "key_9"}, ["api_key.create"]),
        ({"api_key_id": "key_9"}, ["api_key.create"]),
        ({"user_id": "key_9"}, []),
        ({"user_id": "usr_1", "feature": "customer"}, ["customer.create"]),
        ({"entity_type": "payment", "entity_id": "pay_123"}, ["payment.update", "payment.refund"]),
        ({"entity_id": "cus_1"}, ["customer.create"]),
        ({"request_id": "req_b"}, ["payment.update", "payment.refund"]),
        ({"ip": "198.51.100.7"}, ["api_key.create"]),
        ({"q": "SK_LIVE"}, ["api_key.create"]),  # actor label, case-insensitive
        ({"q": "payments:write"}, ["api_key.create"]),  # metadata
        ({"q": "req_c"}, ["receipt.create"]),  # request id
        (
            {"q": "firefox"},
            [
                "receipt.create",
                "payment.update",
                "payment.refund",
                "api_key.create",
                "customer.create",
            ],
        ),  # user agent
        ({"q": "pay_1"}, ["payment.update", "payment.refund"]),  # entity id
        ({"q": "100%_"}, []),  # LIKE wildcards are literal
        (
            {"start": NOW - dt.timedelta(days=1, hours=1), "end": NOW - dt.timedelta(hours=1)},
            ["receipt.create", "payment.update", "payment.refund"],
        ),
    ],
)
def test_filters_combine_with_and(log, filters, expected):
    assert actions(log.list(tenant_id="org_1", **filters)) == expected


def test_tenant_scoping(log):
    assert actions(log.list(tenant_id="org_2")) == ["customer.update"]
    assert actions(log.list(tenant_id="org_3")) == []
    assert len(log.list(tenant_id=ALL_TENANTS).entries) == 6  # trusted code says so
    with pytest.raises(InvalidQuery, match=r"list\(\) needs tenant_id=.*whodid\.ALL_TENANTS"):
        log.list()


def test_cursor_pages_without_skips_or_repeats_while_entries_arrive(log):
    seen: list[str] = []
    page = log.list(tenant_id="org_1", limit=2)
    seen += [e.id for e in page.entries]
    put(log, days_ago=0, action="late.arrival")  # newer than everything paged
    while page.next_cursor:
        page = log.list(tenant_id="org_1", limit=2, cursor=page.next_cursor)
        seen += [e.id for e in page.entries]
    assert len(seen) == len(set(seen)) == 5


def test_cursor_is_bound_to_its_filters_and_checked(log):
    page = log.list(tenant_id="org_1", limit=1)
    with pytest.raises(InvalidQuery, match="cursor is not valid"):
        log.list(tenant_id="org_2", limit=1, cursor=page.next_cursor)
    with pytest.raises(InvalidQuery, match="cursor is not valid"):
        log.list(tenant_id="org_1", action="x.y", limit=1, cursor=page.next_cursor)
    tampered = page.next_cursor[:-3] + ("AAA" if not page.next_cursor.endswith("AAA") else "BBB")
    for bad in (tampered, "garbage", "", "x" * 1000, "eyJ9"):
        with pytest.raises(InvalidQuery, match="cursor"):
            log.list(tenant_id="org_1", limit=1, cursor=bad)


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"actor_type": "robot"}, "actor_type"),
        ({"start": "yesterday"}, "ISO 8601"),
        ({"start": "2026-03-02", "end": "2026-03-01"}, "before it starts"),
        ({"start": "2024-01-01", "end": "2026-01-01"}, "export"),
        ({"colour": "red"}, "unknown filter colour"),
        ({"entity_id": "x" * 401}, "longer than"),
    ],
)
def test_bad_queries_say_what_to_do(log, filters, message):
    with pytest.raises(InvalidQuery, match=message):
        log.list(tenant_id="org_1", **filters)


def test_get_and_related_are_tenant_scoped(log):
    refund = log.list(tenant_id="org_1", action="payment.refund").entries[0]
    assert log.get(refund.id, tenant_id="org_1") == refund
    assert log.get(refund.id, tenant_id="org_2") is None
    assert log.get("log_nope", tenant_id="org_1") is None
    related = [e.action for e in log.related(refund.id, tenant_id="org_1")]
    assert related == ["payment.update", "receipt.create"]  # same request, same chain
    assert log.related(refund.id, tenant_id="org_2") == []


def test_export_csv_has_every_match_utc_and_neutralised_cells(log):
    put(
        log,
        action="customer.update",
        entity=("customer", '=HYPERLINK("http://x")'),
        actor=Actor.user("usr_1", "+1 555 0100"),
        metadata={"note": "@SUM(A1)"},
    )
    out = io.StringIO()
    count = log.export(out, "csv", tenant_id="org_1")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert count == len(rows) == 7  # no 366-day limit: the 400-day-old entry is in
    assert rows[0]["action"] == "customer.delete"  # oldest first
    assert all(r["occurred_at"].endswith("Z") for r in rows)
    last = rows[-1]
    assert last["entity_id"].startswith("'=")
    assert last["actor_label"] == "'+1 555 0100"
    assert json.loads(last["metadata"]) == {"note": "@SUM(A1)"}  # JSON text is not a formula
    assert set(rows[0]) >= {"id", "tenant_id", "before", "after", "client", "digest"}


def test_export_ndjson_streams_to_binary_files(log, tmp_path):
    path = tmp_path / "out.ndjson"
    with path.open("wb") as f:
        count = log.export(f, "ndjson", tenant_id="org_1", action="payment.refund")
    [line] = path.read_text().splitlines()
    assert count == 1
    assert json.loads(line)["entity_id"] == "pay_123"


def test_search_uses_the_trigram_index_on_postgresql(pg_url):
    auditor = Auditor(pg_url)
    auditor.create_all()
    put(auditor, metadata={"note": "needle"})
    auditor.index_search()
    with auditor.engine.connect() as conn:  # type: ignore[union-attr]
        conn.execute(sa.text("SET enable_seqscan = off"))
        from whodid.store.query import Filters
        from whodid.store.schema import entries

        stmt = sa.select(entries.c.seq).where(*Filters.build(q="needle").conditions())
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                sa.text(
                    "EXPLAIN " + str(stmt.compile(conn, compile_kwargs={"literal_binds": True}))
                )
            )
        )
    assert "ix_whodid_search" in plan


def test_postgresql_copy_export_matches_the_python_export(pg_url):
    """CSV on PostgreSQL comes from COPY; it must be byte-for-byte what Python writes."""
    from whodid.export import formats as export
    from whodid.store import query

    auditor = Auditor(pg_url)
    auditor.create_all()
    put(
        auditor,
        entity=("customer", "=cmd|' /C calc'!A0"),
        metadata={"note": "-2+3", "ü": "ß"},
        actor=Actor.user("usr_1", "@admin"),
        user_agent="\tTab agent",
    )
    put(auditor, tenant=None, ip=None, user_agent=None, actor=Actor.system("job"))
    via_copy = io.BytesIO()
    count = auditor.export(via_copy, "csv", tenant_id=ALL_TENANTS)
    via_python = io.BytesIO()
    with auditor.engine.connect() as conn:  # type: ignore[union-attr]
        # As the export read it: up to the seq before its own start entry.
        rows = query.iter_export_rows(conn, query.Filters.build(upto_seq=2))
        assert export.write(via_python, rows, "csv") == count == 2
    assert via_copy.getvalue().decode() == via_python.getvalue().decode()
