"""Committed entries for log streams: none skipped, in windows of transaction ids.

A reader that asks for ``seq > last`` misses entries: seqs are handed out when
a row is inserted, not when its transaction commits, so a transaction holding
seq 10 may commit after another has committed seq 11 and a reader has moved
past it. On PostgreSQL the feed therefore works in windows of transaction ids:
the snapshot's xmin is the oldest transaction still running, so every entry
written by a transaction older than that has either committed or never will.
Each window ``[low, high)`` of txids is read in seq order; the next window
starts where it ended. A rolled-back transaction leaves a gap in the seqs and
nothing else: no window waits for it.

SQLite has one writer at a time and hands out seqs while it holds the write
lock, so seqs become visible in order; there ``after_seq`` alone is the
position.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import hashlib
import time
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from whodid.entry.fields import COLUMNS, JSON_COLUMNS
from whodid.errors import ConfigurationError
from whodid.store.schema import TABLE, TXID, entries, stream_positions

#: Where a feed starts when it has no position yet.
STARTS = ("beginning", "now")

_XMIN = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
_SEQ = COLUMNS.index("seq")


@dataclasses.dataclass(frozen=True)
class Position:
    """How far a stream has shipped (see :data:`whodid.store.schema.stream_positions`)."""

    low: int = 0
    high: int = 0
    after_seq: int = 0
    shipped: int = 0


def start_position(conn: Connection, start: str) -> Position:
    """A new stream's position: before every entry, or after those committed by now."""
    if start not in STARTS:
        raise ConfigurationError(f"start must be 'beginning' or 'now', got {start!r}")
    if start == "beginning":
        return Position()
    if conn.dialect.name == "postgresql":
        # Entries of transactions still running may commit later: they are
        # after "now", so the window starts at the oldest of those.
        xmin = int(conn.exec_driver_sql(_XMIN).scalar_one())
        return Position(low=xmin, high=xmin)
    top = conn.execute(sa.select(sa.func.max(entries.c.seq))).scalar()
    return Position(after_seq=int(top or 0))


def load_position(conn: Connection, name: str) -> Position | None:
    """The stored position of stream ``name``, or None for a stream never run."""
    p = stream_positions.c
    row = conn.execute(
        sa.select(p.low, p.high, p.after_seq, p.shipped).where(p.name == name)
    ).first()
    return None if row is None else Position(*(int(v) for v in row))


def save_position(conn: Connection, name: str, position: Position) -> None:
    """Store ``position`` as stream ``name``'s (in the caller's transaction)."""
    p = stream_positions.c
    values = {**dataclasses.asdict(position), "updated_at": dt.datetime.now(dt.UTC)}
    done = conn.execute(sa.update(stream_positions).where(p.name == name).values(values))
    if done.rowcount == 0:
        conn.execute(sa.insert(stream_positions).values(name=name, **values))


class Claim:
    """Stream ``name`` taken by one relay; :meth:`release` (or the process ending) frees it.

    Two relays shipping one stream would each send every entry and overwrite
    each other's position. On PostgreSQL the claim is a session advisory lock
    on its own connection; on a SQLite file, an exclusive ``flock`` on a file
    beside the database. Both end when the process does, so a killed relay
    never leaves its stream claimed.
    """

    def __init__(self, engine: Engine, name: str) -> None:
        self.name = name
        self._conn: Connection | None = None
        self._file: IO[bytes] | None = None
        if engine.dialect.name == "postgresql":
            self._conn = engine.connect()
            # A relay restarted right after a crash may ask before the server has
            # noticed the dead session still holding the lock: ask for a moment.
            deadline = time.monotonic() + _PATIENCE
            try:
                while True:
                    taken = self._conn.execute(_LOCK, {"key": _key(name)}).scalar_one()
                    self._conn.commit()  # the lock is the session's; no transaction stays open
                    if taken or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
            except Exception:
                self._conn.invalidate()
                raise
            if not taken:
                self._conn.close()
                raise _taken(name)
        elif engine.dialect.name == "sqlite" and (path := _sqlite_file(engine)) is not None:
            digest = hashlib.sha256(name.encode()).hexdigest()[:16]
            self._file = open(f"{path}.stream-{digest}.lock", "ab")  # noqa: SIM115 - held
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._file.close()
                raise _taken(name) from None

    def save(self, engine: Engine, position: Position) -> None:
        """Store the stream's position, through the claim's own session on PostgreSQL:
        if that session died (and its lock with it), the save fails instead of
        a relay that no longer holds the stream writing over another's position."""
        if self._conn is not None:
            with self._conn.begin():
                save_position(self._conn, self.name, position)
        else:
            with engine.begin() as conn:
                save_position(conn, self.name, position)

    def release(self) -> None:
        """Free the stream (quietly: a dropped connection has freed it already)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                # Unlocked here and now: a closed session frees its lock only once
                # the server has noticed, which another relay may be quicker than.
                conn.execute(_UNLOCK, {"key": _key(self.name)})
                conn.commit()
                conn.close()
            except Exception:
                with contextlib.suppress(Exception):
                    conn.invalidate()  # never back to the pool with the lock possibly held
        file, self._file = self._file, None
        if file is not None:
            file.close()


_PATIENCE = 2.0  # seconds
_LOCK = sa.text("SELECT pg_try_advisory_lock(hashtextextended(:key, 0))")
_UNLOCK = sa.text("SELECT pg_advisory_unlock(hashtextextended(:key, 0))")


def _taken(name: str) -> ConfigurationError:
    return ConfigurationError(
        f"another relay is shipping stream {name!r}: stop it first, or give this one "
        "its own name= (--name), which starts its own position"
    )


def _sqlite_file(engine: Engine) -> str | None:
    database = engine.url.database or ""
    path = database.removeprefix("file:").partition("?")[0]
    return None if not path or path == ":memory:" else path


def _key(name: str) -> str:
    return f"whodid stream {name}"


def check_ready(conn: Connection) -> None:
    """Refuse a log that cannot feed a stream, saying what to run."""
    inspector = sa.inspect(conn)
    if not inspector.has_table(TABLE):
        raise ConfigurationError(f"no audit log here: no {TABLE} table (create_all makes one)")
    if conn.dialect.name == "postgresql":
        names = {c["name"] for c in inspector.get_columns(TABLE)}
        if TXID not in names:
            raise ConfigurationError(
                f"{TABLE} has no {TXID} column, which streams need to ship entries in commit "
                "order: run `whodid upgrade` (or Auditor.upgrade()) as the table's owner"
            )
    elif conn.dialect.name == "sqlite":
        created = conn.exec_driver_sql(
            f"SELECT sql FROM sqlite_master WHERE type = 'table' AND name = '{TABLE}'"
        ).scalar_one()
        if "AUTOINCREMENT" not in created.upper():
            # Without it, seqs of purged newest entries are handed out again,
            # below a stream's position: those entries would never ship.
            raise ConfigurationError(
                f"{TABLE} was made by an older whodid that reuses seqs: run `whodid upgrade` "
                "(or Auditor.upgrade()) before streaming it"
            )
    else:
        raise ConfigurationError(
            f"log streams support PostgreSQL and SQLite, not {conn.dialect.name}"
        )
    stream_positions.create(conn, checkfirst=True)


def next_batch(
    conn: Connection, position: Position, limit: int
) -> tuple[list[tuple[Any, ...]], Position]:
    """Up to ``limit`` committed entries after ``position``, and the position after them.

    Rows are tuples in :data:`~whodid.entry.fields.COLUMNS` order with the
    JSON columns as JSON text (what :func:`whodid.export.formats.lines` takes).
    An empty list means nothing more is committed yet.
    """
    rows = _read(conn, _pending(conn, position), limit)
    if not rows and conn.dialect.name == "postgresql":
        # This window is done: open the next, up to the oldest running transaction.
        opened = _next_window(conn, position)
        if opened != position:
            position = opened
            rows = _read(conn, _pending(conn, position), limit)
    if rows:
        position = dataclasses.replace(
            position, after_seq=rows[-1][_SEQ], shipped=position.shipped + len(rows)
        )
    return rows, position


def _next_window(conn: Connection, position: Position) -> Position:
    xmin = int(conn.exec_driver_sql(_XMIN).scalar_one())
    if xmin < position.high:
        # Never on one server (xmin only grows): the log was restored or moved
        # to another one, whose new entries may carry txids the stream passed.
        raise ConfigurationError(
            f"transaction ids went back ({xmin} after {position.high}): this database was "
            "restored or moved to another server since the stream last ran. Start the "
            "stream again under a new name (start='beginning' re-ships every entry; "
            "receivers keep each id once)"
        )
    if xmin == position.high:
        return position
    return Position(position.high, xmin, 0, position.shipped)


_TXID = sa.column(TXID, sa.BigInteger)


def _pending(conn: Connection, position: Position) -> list[Any]:
    """What is left of ``position``'s window (on SQLite, everything after it)."""
    after = entries.c.seq > position.after_seq
    if conn.dialect.name != "postgresql":
        return [after]
    if position.high == 0:
        # The window before all others: entries written before the column existed.
        return [_TXID.is_(None), after]
    return [position.low <= _TXID, position.high > _TXID, after]


def _later(conn: Connection, position: Position) -> Any:
    """What windows after ``position``'s will hold (SQLite has no other windows)."""
    if conn.dialect.name != "postgresql":
        return sa.false()
    return _TXID.is_not(None) if position.high == 0 else position.high <= _TXID


def _read(conn: Connection, where: list[Any], limit: int) -> list[tuple[Any, ...]]:
    c = entries.c
    columns = [sa.cast(c[n], sa.Text) if n in JSON_COLUMNS else c[n] for n in COLUMNS]
    stmt = sa.select(*columns).where(*where).order_by(c.seq).limit(limit)
    return [tuple(row) for row in conn.execute(stmt)]


def unshipped(conn: Connection, where: list[Any]) -> dict[str, int]:
    """For each stream, how many entries matching ``where`` it has not shipped yet.

    Retention asks before it deletes: a purge does not wait for a lagging
    stream, but says what that stream will never get.
    """
    if not sa.inspect(conn).has_table(stream_positions.name):
        return {}
    p = stream_positions.c
    found = {}
    for name, *at in conn.execute(sa.select(p.name, p.low, p.high, p.after_seq)):
        position = Position(*at)
        ahead = sa.or_(sa.and_(*_pending(conn, position)), _later(conn, position))
        count = sa.select(sa.func.count()).select_from(entries).where(*where, ahead)
        if missed := int(conn.execute(count).scalar_one()):
            found[name] = missed
    return dict(sorted(found.items()))
