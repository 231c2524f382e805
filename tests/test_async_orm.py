"""AsyncSession (aiosqlite, psycopg async, asyncpg) is captured like the sync Session."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from support.models import Base, Customer, Note, auditor, read_entries
from support.pgserver import with_driver
from whodid import ALL_TENANTS, Actor, ConfigurationError, audit_context, set_actor


async def _scenario(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        await conn.run_sync(auditor.create_all)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    auditor.instrument(maker)

    async def request(n: int) -> None:
        # Each task is one "request": its actor must reach only its own entries.
        with audit_context(request_id=f"req{n}"):
            set_actor(Actor.user(f"usr_{n}"))
            async with maker() as s:
                c = Customer(email=f"{n}@example.com")
                s.add(c)
                await asyncio.sleep(0)
                await s.commit()
                c.email = f"{n}@changed.example"
                await s.commit()
                await s.delete(c)
                await s.commit()

    await asyncio.gather(*(request(n) for n in range(8)))

    async with maker() as s:  # a rolled-back async transaction leaves nothing
        s.add(Customer(email="gone@example.com"))
        await s.flush()
        await s.rollback()
    async with maker() as s:  # untracked stays silent
        s.add(Note(body="n"))
        await s.commit()
    async with maker() as s:  # bulk statements through the async session
        s.add(Customer(email="bulk@example.com"))
        await s.commit()
        await s.execute(sa.update(Customer).values(email="bulk2@example.com"))
        await s.commit()

    sync_url = url.replace("+aiosqlite", "").replace("+psycopg_async", "+psycopg")
    sync_url = sync_url.replace("+asyncpg", "+psycopg")
    rows = read_entries(sa.create_engine(sync_url))
    per_request = [r for r in rows if r.request_id]
    assert len(per_request) == 24
    for r in per_request:
        n = r.request_id.removeprefix("req")
        assert r.actor_id == f"usr_{n}"
    assert all("gone" not in str(r.after) for r in rows)
    bulk = [r for r in rows if r.request_id is None]
    assert [r.operation for r in bulk] == ["create", "update"]
    assert bulk[1].after == {"email": "bulk2@example.com"}
    await engine.dispose()


def test_async_session_is_captured(async_db_url):
    asyncio.run(_scenario(async_db_url))


def test_asyncpg_is_captured(pg_url):
    asyncio.run(_scenario(with_driver(pg_url, "asyncpg")))


def test_instrument_needs_the_factory_not_the_class():
    with pytest.raises(ConfigurationError, match="async_sessionmaker"):
        auditor.instrument(AsyncSession)


def test_auditor_given_an_async_engine_reads_through_a_sync_twin(async_db_url):
    from sqlalchemy.ext.asyncio import create_async_engine

    from whodid import Auditor

    auditor = Auditor(create_async_engine(async_db_url))
    assert auditor.engine is not None and "async" not in auditor.engine.url.drivername
    auditor.create_all()
    auditor.record("auth.signin", entity=("user", "usr_1"))
    assert [e.action for e in auditor.list(tenant_id=ALL_TENANTS).entries] == ["auth.signin"]
