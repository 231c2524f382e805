"""Every way an entry reaches or leaves the table, behind one small interface per database.

- :class:`~whodid.store.drivers.base.Driver`: SQLAlchemy Core, the reference;
- :class:`~whodid.store.drivers.sqlite.SQLiteDriver`: a ready-made INSERT
  through the cursor, CSV lines built in SQL;
- :class:`~whodid.store.drivers.postgres.PostgresDriver`: the ready-made
  INSERT; :class:`~whodid.store.drivers.postgres.PsycopgDriver` adds COPY in
  and out and the entries sent with the COMMIT.

:func:`driver_for` chooses once per engine; ``fast_paths=False`` gives the
reference everywhere. ``tests/test_drivers.py`` holds every driver to the
reference's bytes.
"""

from __future__ import annotations

import threading
import weakref

from sqlalchemy.engine import Connection, Engine

from whodid.store.drivers.base import ENCODED, Driver, PreparedInsertDriver
from whodid.store.drivers.postgres import PostgresDriver, PsycopgDriver
from whodid.store.drivers.sqlite import SQLiteDriver

__all__ = ["ENCODED", "Driver", "Drivers", "driver_for"]

_REFERENCE = Driver()


def driver_for(engine: Engine | Connection, *, fast_paths: bool = True) -> Driver:
    """The fastest driver that stores what the reference stores, for ``engine``'s database."""
    dialect = engine.dialect
    if not fast_paths or not PreparedInsertDriver.handles(dialect.paramstyle):
        return _REFERENCE
    if dialect.name == "sqlite":
        return SQLiteDriver()
    if dialect.name == "postgresql":
        return PsycopgDriver() if dialect.driver == "psycopg" else PostgresDriver()
    return _REFERENCE


class Drivers:
    """The driver of each engine a writer meets, chosen once."""

    def __init__(self, *, fast_paths: bool = True) -> None:
        self.fast_paths = fast_paths
        self._chosen: weakref.WeakKeyDictionary[Engine, Driver] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __call__(self, connection: Connection) -> Driver:
        engine = connection.engine
        driver = self._chosen.get(engine)
        if driver is None:
            with self._lock:
                driver = self._chosen.get(engine)
                if driver is None:
                    driver = self._chosen[engine] = driver_for(engine, fast_paths=self.fast_paths)
        return driver
