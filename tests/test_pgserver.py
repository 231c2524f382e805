"""The database fixtures themselves: a real PostgreSQL 15+ and real SQLite files."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from support.pgserver import with_driver


@pytest.mark.postgres
def test_postgres_is_version_15_or_newer(pg_url: str) -> None:
    assert pg_url.startswith("postgresql+psycopg://")
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        version = conn.execute(sa.text("SELECT version()")).scalar_one()
        version_num = int(conn.execute(sa.text("SHOW server_version_num")).scalar_one())
    engine.dispose()
    assert version.startswith("PostgreSQL ")
    assert version_num >= 150000, version


_databases_seen: set[str] = set()


@pytest.mark.postgres
@pytest.mark.parametrize("run", [1, 2])
def test_each_test_gets_its_own_database(pg_url: str, run: int) -> None:
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        name = conn.execute(sa.text("SELECT current_database()")).scalar_one()
        # Would fail on the second run if the database were shared.
        conn.execute(sa.text("CREATE TABLE marker (id integer)"))
    engine.dispose()
    assert name not in _databases_seen
    _databases_seen.add(name)


def test_sqlite_url_is_a_real_file(sqlite_url: str, tmp_path: Path) -> None:
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x integer)"))
        conn.execute(sa.text("INSERT INTO t VALUES (42)"))
    engine.dispose()
    path = tmp_path / "app.db"
    assert path.is_file() and path.stat().st_size > 0
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT x FROM t").fetchall() == [(42,)]


def test_engine_round_trip(engine: sa.Engine) -> None:
    meta = sa.MetaData()
    parent = sa.Table("parent", meta, sa.Column("id", sa.Integer, primary_key=True))
    child = sa.Table(
        "child",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("parent_id", sa.ForeignKey("parent.id"), nullable=False),
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(parent.insert().values(id=1))
        conn.execute(child.insert().values(id=1, parent_id=1))
    # Foreign keys are enforced on both backends (SQLite only through the fixture's PRAGMA).
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(child.insert().values(id=2, parent_id=99))
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            assert conn.execute(sa.text("PRAGMA journal_mode")).scalar_one() == "wal"


def test_async_drivers(async_db_url: str) -> None:
    urls = [async_db_url]
    if async_db_url.startswith("postgresql"):
        urls.append(with_driver(async_db_url, "asyncpg"))

    async def select_one(url: str) -> int:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return int((await conn.execute(sa.text("SELECT 1"))).scalar_one())
        finally:
            await engine.dispose()

    for url in urls:
        assert asyncio.run(select_one(url)) == 1, url
