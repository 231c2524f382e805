"""The PostgreSQL server of a benchmark run: a throwaway one, or one given by URL."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

TESTS = Path(__file__).resolve().parent.parent / "tests" / "support"


def start_throwaway(durable: bool = True) -> Any:
    """A PostgresServer from tests/pgserver.py (initdb in /tmp, 127.0.0.1, free port),
    with durable commits (fsync, synchronous_commit) as production runs, unless
    ``durable=False``."""
    sys.path.insert(0, str(TESTS))
    try:
        from pgserver import PostgresServer, find_pg_bin
    finally:
        sys.path.remove(str(TESTS))
    bin_dir = find_pg_bin()
    if bin_dir is None:
        return None
    server = PostgresServer(bin_dir, durable=durable)
    server.start()
    return server


def create_database(base_url: str, name: str) -> str:
    """(Re)create database ``name`` on the server of ``base_url``; its psycopg URL."""
    import psycopg
    from psycopg import sql

    url = make_url(base_url)
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        ident = sql.Identifier(name)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    return url.set(drivername="postgresql+psycopg", database=name).render_as_string(
        hide_password=False
    )


def server_facts(url: str) -> dict[str, str]:
    """Version and the settings that matter for write costs."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            facts = {"version": conn.execute(sa.text("SHOW server_version")).scalar_one()}
            for name in (
                "fsync",
                "synchronous_commit",
                "full_page_writes",
                "shared_buffers",
                "work_mem",
                "max_parallel_workers_per_gather",
            ):
                facts[name] = conn.execute(sa.text(f"SHOW {name}")).scalar_one()
    finally:
        engine.dispose()
    return facts
