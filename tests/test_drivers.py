"""Every driver against the reference (SQLAlchemy Core), byte for byte.

The same entry rows, hostile values included, go through each driver's way in
(ready-made INSERT through the cursor or exec_driver_sql, COPY, riding on the
COMMIT) and out (COPY and SQLite's SQL for CSV); what the database then holds,
and what the export writes, must be what the reference path gives.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from support.pgserver import with_driver
from whodid import Actor, Auditor
from whodid.context import RequestContext
from whodid.entry.fields import JSON_COLUMNS
from whodid.entry.values import to_json
from whodid.export import formats
from whodid.store import query
from whodid.store.drivers import Driver, driver_for
from whodid.store.drivers.postgres import COPY_THRESHOLD, PostgresDriver, PsycopgDriver
from whodid.store.drivers.sqlite import SQLiteDriver
from whodid.store.schema import entries
from whodid.store.writer import Change, Writer

NASTY = [
    "plain",
    "quote ' and \\ backslash",
    "nul \x00 inside",
    "lone \ud800 surrogate",
    "emoji 😀 Zürich",
    "Bob\r=cmd|' /C calc'!A0",
    "=SUM(1)",
    "$escaped",
    "",  # COPY would quote a non-NULL empty string; csv writes an empty cell
]


def rows(count: int) -> list[dict[str, Any]]:
    """Entry rows from the writer: the drivers' input, hostile values everywhere."""
    changes = []
    for i in range(count):
        text = NASTY[i % len(NASTY)]
        changes.append(
            Change(
                feature="thing",
                operation="update",
                entity_type="thing",
                entity_id=text,
                before={"v": to_json(text), "n": [2**70, -0.0, 1e16, 0.1]},
                after={"v": to_json(text + "!"), "k": to_json({"d": [text]})},
                metadata=to_json({"note": text}),
            )
        )
    ctx = RequestContext(
        actor=Actor.user("usr_1", label=NASTY[5]),
        tenant_id="org_1",
        ip="203.0.113.9",
        user_agent=NASTY[1],
        request_id="req_1",
    )
    return Writer().rows(changes, ctx)


def stored(engine: sa.Engine) -> list[dict[str, Any]]:
    """What the table holds, as the database's text, without the database's seq."""
    columns = [sa.cast(c, sa.Text) if c.name in JSON_COLUMNS else c for c in entries.c]
    with engine.connect() as conn:
        found = conn.execute(sa.select(*columns).order_by(entries.c.seq)).mappings()
        return [{k: v for k, v in r.items() if k != "seq"} for r in found]


def fresh(url: str) -> sa.Engine:
    engine = sa.create_engine(url)
    Auditor(engine).create_all()
    return engine


def through(url: str, write: Callable[[sa.Connection], None]) -> list[dict[str, Any]]:
    engine = fresh(url)
    try:
        with engine.begin() as conn:
            write(conn)
        return stored(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize("count", [1, 12, COPY_THRESHOLD + 5])
def test_each_driver_inserts_what_the_reference_inserts(db_url, tmp_path, count):
    batch = rows(count)
    reference = through(db_url, lambda conn: Driver().insert(conn, batch))
    engine = sa.create_engine(db_url)
    driver = driver_for(engine)
    engine.dispose()
    expected = SQLiteDriver if db_url.startswith("sqlite") else PsycopgDriver
    assert type(driver) is expected
    assert len(reference) == count
    fast = through(_another(db_url, tmp_path), lambda conn: driver.insert(conn, batch))
    assert fast == reference


def _another(url: str, tmp_path: Any) -> str:
    """A second empty database next to ``url``, for the other path's rows."""
    if url.startswith("sqlite"):
        return f"sqlite:///{tmp_path}/other.db"
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    name = f"{sa.engine.make_url(url).database}_other"
    with engine.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    return sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.mark.postgres
def test_rows_held_for_the_commit_are_the_reference_rows(pg_url, tmp_path):
    batch = rows(5)
    reference = through(pg_url, lambda conn: Driver().insert(conn, batch))
    engine = fresh(_another(pg_url, tmp_path))
    driver = driver_for(engine)
    assert isinstance(driver, PsycopgDriver)
    with engine.begin() as conn:
        assert driver.hold_for_commit(conn, batch)  # sent with the COMMIT
    assert stored(engine) == reference
    engine.dispose()


@pytest.mark.postgres
def test_asyncpg_takes_the_ready_made_insert_alike(pg_url, tmp_path):
    batch = rows(12)
    reference = through(pg_url, lambda conn: Driver().insert(conn, batch))
    other = _another(pg_url, tmp_path)
    fresh(other).dispose()

    async def write() -> None:
        engine = create_async_engine(with_driver(other, "asyncpg"))
        driver = driver_for(engine.sync_engine)
        assert type(driver) is PostgresDriver
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: driver.insert(sync, batch))
        await engine.dispose()

    asyncio.run(write())
    check = sa.create_engine(other)
    assert stored(check) == reference
    check.dispose()


def test_each_driver_exports_the_python_writers_bytes(db_url):
    engine = fresh(db_url)
    with engine.begin() as conn:
        Driver().insert(conn, rows(40))
    with engine.connect() as conn:
        spec = query.Filters.build()
        python = io.BytesIO()
        formats.write(python, query.iter_export_rows(conn, spec), "csv")
        fast = io.BytesIO()
        count = driver_for(conn).export_csv(
            conn, query.export_where(conn, spec), fast, None, formats.lines
        )
        assert (
            driver_for(conn, fast_paths=False).export_csv(
                conn, [], io.BytesIO(), None, formats.lines
            )
            is None
        )  # the reference: the Python writer itself
    assert count == 40
    assert fast.getvalue() == python.getvalue()
    engine.dispose()


def test_fast_paths_false_chooses_the_reference_everywhere(db_url):
    engine = sa.create_engine(db_url)
    assert type(driver_for(engine, fast_paths=False)) is Driver
    auditor = Auditor(engine, fast_paths=False)
    with engine.connect() as conn:
        assert type(auditor.writer.drivers(conn)) is Driver
    engine.dispose()
