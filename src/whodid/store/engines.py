"""Async engines and sessions, recognised without importing SQLAlchemy's asyncio
extension (it needs greenlet, which SQLAlchemy 2.1 no longer installs), and the
sync engine whodid reads an async app's log through."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from whodid.errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


def is_async(value: Any, *names: str) -> bool:
    """Whether ``value`` is an instance of one of ``sqlalchemy.ext.asyncio``'s ``names``.

    Looked up in ``sys.modules`` rather than imported: the asyncio extension needs
    greenlet, which SQLAlchemy 2.1 no longer installs, and no object of its classes
    can exist before the extension is imported.
    """
    module = sys.modules.get("sqlalchemy.ext.asyncio")
    return module is not None and isinstance(value, tuple(getattr(module, n) for n in names))


_SYNC_DRIVERS = {"asyncpg": "psycopg", "psycopg_async": "psycopg", "aiosqlite": "pysqlite"}


def sync_twin(engine: AsyncEngine) -> Engine:
    """A sync engine on ``engine``'s database, for reading: asyncpg and psycopg async
    become psycopg, aiosqlite becomes sqlite3."""
    url = engine.url
    backend, _, driver = url.drivername.partition("+")
    sync = _SYNC_DRIVERS.get(driver)
    if sync is None:
        raise ConfigurationError(
            f"no sync driver known for {url.drivername}; pass Auditor() a sync URL of the "
            "same database for reading"
        )
    return create_engine(url.set(drivername=f"{backend}+{sync}"))
