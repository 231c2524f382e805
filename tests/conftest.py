"""Shared fixtures: real databases only (SQLite files and a throwaway PostgreSQL), no mocks."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from support.pgserver import PostgresServer, find_pg_bin, with_driver

# Every backend-parametrized fixture uses these; the PostgreSQL case carries a marker
# so `-m "not postgres"` deselects it.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres, id="postgresql")]

_db_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session: WHODID_TEST_PG_URL, or one we start."""
    if external := os.environ.get("WHODID_TEST_PG_URL"):
        yield PostgresServer.existing(external)
        return
    bin_dir = find_pg_bin()
    if bin_dir is None:
        message = (
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install them with "
            "`apt-get install -y postgresql`, or point WHODID_TEST_PG_URL at a server"
        )
        # CI must really test PostgreSQL; a developer without it may still run the rest.
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    server = PostgresServer(bin_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_template(pg_server: PostgresServer) -> str:
    """A database holding whodid's empty log, which every test's database copies:
    a copy costs less than making the schema again (benchmarks/PROFILES.md)."""
    from whodid import Auditor

    url = pg_server.create_database("whodid_template")
    engine = sa.create_engine(url)
    Auditor(engine).create_all()
    engine.dispose()  # a template must have no connections while it is copied
    return "whodid_template"


@pytest.fixture
def pg_url(pg_server: PostgresServer, pg_template: str) -> str:
    """A fresh database per test holding an empty audit log, so tests cannot see
    each other's rows."""
    # Not dropped afterwards: the whole server is thrown away at the end of the session.
    return pg_server.create_database(f"t_{next(_db_numbers)}", template=pg_template)


@pytest.fixture
def pg_empty_url(pg_server: PostgresServer) -> str:
    """A fresh database per test with nothing in it (no audit log yet)."""
    return pg_server.create_database(f"t_{next(_db_numbers)}")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis server for the whole session (Debian's redis-server, on 127.0.0.1)."""
    import shutil

    from support.redisserver import RedisServer

    if shutil.which("redis-server") is None:
        message = "redis-server not found: apt-get install -y redis-server"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    server = RedisServer()
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A real SQLite file (not :memory:), so several connections see the same data."""
    return f"sqlite:///{tmp_path}/app.db"


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest) -> str:
    """Like db_url, but the PostgreSQL database holds nothing yet."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_empty_url"
    return str(request.getfixturevalue(name))


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    """Runs the test once per backend; PostgreSQL is only started if such a test runs."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A CA made for the session (trustme) and a certificate for 127.0.0.1 and localhost."""
    from support.sinks import Certificates

    return Certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def db_auditor(db_url: str) -> Iterator[Any]:
    """An Auditor with an empty log on db_url (each backend), disposed afterwards."""
    from whodid import Auditor

    auditor = Auditor(db_url)
    auditor.create_all()
    yield auditor
    assert auditor.engine is not None
    auditor.engine.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """A SQLAlchemy engine on db_url, with SQLite set up the way applications should."""
    engine = sa.create_engine(db_url)
    if engine.dialect.name == "sqlite":
        # SQLite leaves foreign keys off per connection; WAL lets readers run beside a writer.
        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    yield engine
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def async_db_url(request: pytest.FixtureRequest) -> str:
    """Async driver URLs: sqlite+aiosqlite or postgresql+psycopg_async.

    For asyncpg on the same database use ``with_driver(async_db_url, "asyncpg")``.
    """
    if request.param == "sqlite":
        return with_driver(request.getfixturevalue("sqlite_url"), "aiosqlite")
    return with_driver(request.getfixturevalue("pg_url"), "psycopg_async")
