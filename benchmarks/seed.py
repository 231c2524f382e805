"""Fill the audit table with realistic entries, fast (COPY on PostgreSQL).

    python benchmarks/seed.py URL N

Entries are real: every field filled, digests computed by whodid's own code,
spread over the last 300 days across 20 actions; 90 % belong to ``org_big``
so deep pages of one tenant exist. The table, indexes and triggers are
whodid's own (``Auditor.create_all``); the secondary indexes are dropped
before the load and rebuilt from their own definitions after it.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sys
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from whodid import Auditor
from whodid.entry.fields import digest, new_entry_id
from whodid.store.schema import entries, search_text

ACTIONS = [
    f"{f}.{op}"
    for f in ("customer", "payment", "wallet", "api_key", "payout")
    for op in ("create", "update", "delete", "refund")
]
COLUMNS = [c.name for c in entries.columns if c.name != "seq"]
JSON_COLUMNS = {"client", "metadata", "before", "after"}


def rows(n: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    rnd = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(days=300)
    step = dt.timedelta(days=300) / max(n, 1)
    for i in range(n):
        action = ACTIONS[rnd.randrange(len(ACTIONS))]
        feature, _, operation = action.partition(".")
        user = rnd.randrange(500)
        row = {
            "id": new_entry_id(),
            "tenant_id": "org_big" if rnd.random() < 0.9 else f"org_{rnd.randrange(50)}",
            "occurred_at": start + step * i,
            "action": action,
            "feature": feature,
            "operation": operation,
            "entity_type": feature,
            "entity_id": f"{feature[:3]}_{rnd.randrange(200_000):06d}",
            "actor_type": "user" if user % 3 else "api_key",
            "actor_id": f"usr_{user}" if user % 3 else f"key_{user}",
            "actor_label": f"user{user}@example.com" if user % 3 else f"sk_live_{user:04d}",
            "passkey": bool(user % 2),
            "ip": f"203.0.{user % 256}.{i % 256}",
            "country": "DE",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36",
            "client": {
                "browser": "Chrome 120.0",
                "os": "Linux",
                "device": "Other",
                "is_bot": False,
            },
            "request_id": f"req_{i // 2:010d}",
            "metadata": {"amount": f"{rnd.randrange(1, 100000) / 100:.2f}", "currency": "EUR"},
            "before": {"status": "pending"} if operation == "update" else None,
            "after": {"status": "settled"} if operation == "update" else None,
        }
        row["digest"] = digest(row)
        yield row


def _pg_secondary_indexes(cur: Any) -> list[tuple[str, str]]:
    """(name, CREATE statement) of the audit table's indexes not backing a constraint."""
    cur.execute(
        """SELECT i.indexname, i.indexdef FROM pg_indexes i
           WHERE i.schemaname = current_schema() AND i.tablename = 'whodid_entries'
             AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                             WHERE c.conname = i.indexname
                               AND c.conrelid = 'whodid_entries'::regclass)"""
    )
    return [(name, sql) for name, sql in cur.fetchall()]


def _seed_postgresql(engine: sa.Engine, n: int) -> None:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        # Build the secondary indexes (the trigram one above all) once at the end,
        # not row by row: the same indexes, many times faster.
        indexes = _pg_secondary_indexes(cur)
        for name, _ in indexes:
            cur.execute(f'DROP INDEX "{name}"')
        with cur.copy(f"COPY whodid_entries ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in rows(n):
                copy.write_row(
                    [
                        json.dumps(row[c]) if c in JSON_COLUMNS and row[c] is not None else row[c]
                        for c in COLUMNS
                    ]
                )
        cur.execute("SET maintenance_work_mem = '512MB'")
        for _, sql in indexes:
            cur.execute(sql)
        # The COPY queued one range for the search indexer; fill the search
        # table in one statement and build its trigram index after, as with
        # the other indexes (Auditor.index_search() would get there too, in
        # batches, index maintained row by row).
        cur.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_whodid_search'")
        search_index = cur.fetchone()
        cur.execute("DROP INDEX IF EXISTS ix_whodid_search")
        text = search_text().compile(dialect=engine.dialect)
        cur.execute(f"INSERT INTO whodid_search (seq, text) SELECT seq, {text} FROM whodid_entries")
        cur.execute("DELETE FROM whodid_search_queue")
        if search_index:
            cur.execute(search_index[0])
        raw.commit()
        raw.driver_connection.autocommit = True  # VACUUM refuses a transaction
        cur.execute("VACUUM ANALYZE whodid_entries")
        cur.execute("VACUUM ANALYZE whodid_search")
        cur.execute("VACUUM ANALYZE whodid_search_queue")
    finally:
        raw.close()


def _seed_sqlite(engine: sa.Engine, n: int) -> None:
    with engine.begin() as conn:
        indexes = conn.execute(
            sa.text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                "AND tbl_name = 'whodid_entries' AND sql IS NOT NULL"
            )
        ).all()
        for name, _ in indexes:
            conn.execute(sa.text(f'DROP INDEX "{name}"'))
        batch: list[dict[str, Any]] = []
        for row in rows(n):
            batch.append(row)
            if len(batch) == 10_000:
                conn.execute(entries.insert(), batch)
                batch = []
        if batch:
            conn.execute(entries.insert(), batch)
        for _, sql in indexes:
            conn.execute(sa.text(sql))
        conn.execute(sa.text("ANALYZE"))


def seed(url: str, n: int) -> float:
    """Create the audit table (with whodid's own indexes and triggers) and insert n
    entries; returns seconds taken. COPY on PostgreSQL, batched executemany on SQLite;
    secondary indexes are dropped first and rebuilt after the load."""
    auditor = Auditor(url)
    engine = auditor.engine
    assert engine is not None
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cur = dbapi_connection.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=OFF")
            cur.close()

    t = time.perf_counter()
    auditor.create_all()
    if engine.dialect.name == "postgresql":
        _seed_postgresql(engine, n)
    else:
        _seed_sqlite(engine, n)
    took = time.perf_counter() - t
    engine.dispose()
    return took


if __name__ == "__main__":
    took = seed(sys.argv[1], int(sys.argv[2]))
    print(f"seeded {sys.argv[2]} entries in {took:.1f} s")
