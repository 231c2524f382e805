"""The relay: ships committed entries to one destination, at least once, none skipped.

Each round reads the next batch after the stream's stored position (see
:mod:`whodid.store.feed`), sends it, and only then stores the position after
it. A relay killed between the two sends that batch again when it restarts:
a destination may see an entry twice, always with the same ``id`` and bytes,
and never sees a later entry before an earlier one except in such a repeat.
While a destination refuses, the same batch is retried with exponential
backoff and full jitter; with ``dead_letter`` set, a batch that failed
``max_attempts`` times is written there and the relay moves on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from whodid.entry.fields import COLUMNS
from whodid.errors import ConfigurationError, DeliveryError, WhodidError
from whodid.export.formats import lines
from whodid.store import feed
from whodid.stream.destination import Batch, Destination

log = logging.getLogger("whodid.stream")

_TENANT, _ACTION, _ACTOR_TYPE = (COLUMNS.index(n) for n in ("tenant_id", "action", "actor_type"))


@dataclasses.dataclass(frozen=True)
class StreamFilter:
    """Which entries a stream ships; an empty field lets every entry through.

    Args:
        tenants: tenant ids (``None`` in the list for entries with no tenant).
        action_prefixes: e.g. ``["payment.", "api_key."]``.
        actor_types: e.g. ``["user", "api_key"]``.
    """

    tenants: Collection[str | None] = ()
    action_prefixes: Collection[str] = ()
    actor_types: Collection[str] = ()
    _prefixes: tuple[str, ...] = dataclasses.field(default=(), init=False, repr=False)

    def __post_init__(self) -> None:
        for field in ("tenants", "action_prefixes", "actor_types"):
            if isinstance(getattr(self, field), str):
                # A lone string would be read as a set of characters and pass nothing.
                raise ConfigurationError(f"{field} takes a list, e.g. {field}=['x'], not a string")
        object.__setattr__(self, "tenants", frozenset(self.tenants))
        object.__setattr__(self, "action_prefixes", tuple(self.action_prefixes))
        object.__setattr__(self, "_prefixes", tuple(self.action_prefixes))
        object.__setattr__(self, "actor_types", frozenset(self.actor_types))

    def __call__(self, row: tuple[Any, ...]) -> bool:
        return (
            (not self.tenants or row[_TENANT] in self.tenants)
            and (not self._prefixes or row[_ACTION].startswith(self._prefixes))
            and (not self.actor_types or row[_ACTOR_TYPE] in self.actor_types)
        )


class _Stopped(Exception):
    """stop() was called while a batch was being retried; it stays unshipped."""


class Relay:
    """Ships the log to ``destination``; ``run()`` it, or ``start()`` it in a thread.

    Args:
        engine: the audit database (the relay reads entries and stores its position).
        destination: where to (see :func:`whodid.stream.destination_for`).
        name: the stream's name, the key of its stored position (default: the
            destination's). Two relays must not share a name.
        filter: which entries to ship; the position moves past the others.
        start: where a stream with no stored position begins: ``"beginning"``
            (every entry) or ``"now"`` (entries committed from now on).
        batch_size: at most this many entries read and sent at once.
        interval: seconds between polls while nothing is new.
        max_attempts: sends of one batch before it goes to ``dead_letter``.
        dead_letter: file where batches that failed ``max_attempts`` times are
            appended as NDJSON; without it a batch is retried until delivered.
        backoff: the first retry's delay cap in seconds, doubled each attempt
            up to ``max_backoff``; the delay is drawn uniformly below the cap.
        sleep: how to wait (default: an interruptible wait that :meth:`stop` ends).

    Example:
        >>> relay = auditor.stream("https://siem.example/whodid", secrets=[SECRET])
        >>> relay.start()   # a daemon thread; relay.stop() ends it
        >>> with auditor.stream("audit.ndjson") as relay:   # or once, then let go
        ...     relay.drain()
    """

    def __init__(
        self,
        engine: Engine,
        destination: Destination,
        *,
        name: str | None = None,
        filter: StreamFilter | None = None,
        start: str = "beginning",
        batch_size: int = 1000,
        interval: float = 0.2,
        max_attempts: int = 10,
        dead_letter: str | os.PathLike[str] | None = None,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        sleep: Callable[[float], Any] | None = None,
    ) -> None:
        if start not in feed.STARTS:
            raise ConfigurationError(f"start must be 'beginning' or 'now', got {start!r}")
        if batch_size < 1 or interval <= 0 or max_attempts < 1 or backoff <= 0:
            raise ConfigurationError(
                "batch_size and max_attempts must be at least 1, interval and backoff positive"
            )
        self.engine, self.destination = engine, destination
        self.name = name or destination.name
        if not 1 <= len(self.name) <= 200:
            raise ConfigurationError("a stream's name is 1 to 200 characters")
        self.filter = filter or StreamFilter()
        self.start_at, self.batch_size, self.interval = start, batch_size, interval
        self.max_attempts, self.backoff, self.max_backoff = max_attempts, backoff, max_backoff
        self.dead_letter = Path(dead_letter) if dead_letter is not None else None
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._thread: threading.Thread | None = None
        self._position: feed.Position | None = None
        self._claim: feed.Claim | None = None
        #: Entries delivered, batches dead-lettered and failed sends, since this relay began.
        self.delivered = self.dead_lettered = self.failures = 0

    @property
    def position(self) -> feed.Position:
        """The stored position (read once, then kept as the relay moves it)."""
        if self._position is None:
            if self._claim is None:
                self._claim = feed.Claim(self.engine, self.name)
            with self.engine.begin() as conn:
                feed.check_ready(conn)
                found = feed.load_position(conn, self.name)
                if found is None:
                    found = feed.start_position(conn, self.start_at)
                    feed.save_position(conn, self.name, found)
            self._position = found
        return self._position

    def close(self) -> None:
        """Let go of the stream (another relay may take it) and of the destination."""
        self.destination.close()
        self._drop_claim()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A relay dropped without close() must not leave its stream claimed.
        self._drop_claim()

    def _drop_claim(self) -> None:
        claim = getattr(self, "_claim", None)
        if claim is not None:
            claim.release()
            self._claim = None

    def run_once(self) -> int:
        """Ship one batch if one is committed; how many entries were read (0: caught up)."""
        return self._round()

    def drain(self) -> int:
        """Ship until nothing committed is left; how many entries were read."""
        total = 0
        while not self._stop.is_set():
            try:
                read = self._round()
            except _Stopped:
                break
            total += read
            if not read:
                break
        return total

    def run(self) -> None:
        """Ship until :meth:`stop`, polling every ``interval`` while caught up.

        A log the relay cannot use (no table, no txid column, the stream taken)
        raises at once; a database that goes away later is retried.
        """
        try:
            _ = self.position
            failed = 0
            while not self._stop.is_set():
                try:
                    read = self._round()
                    failed = 0
                except _Stopped:
                    return
                except WhodidError:
                    raise  # the stream taken, the log restored elsewhere: a person must act
                except Exception:
                    # The database went away: keep the relay alive and try again, backing off.
                    failed += 1
                    log.exception("stream %s: reading the log failed; retrying", self.name)
                    self._position = None
                    self._drop_claim()  # its connection may be gone with the lock: take it anew
                    self._sleep(min(self.max_backoff, self.interval * 2**failed))
                    continue
                if read < self.batch_size:
                    self._sleep(self.interval)
        finally:
            self.close()

    def _round(self) -> int:
        """Read, send and record one batch; how many entries were read.

        Entries the filter leaves out are read and passed over: the position
        moves past them all the same. A new window with nothing in it is kept
        in memory only, so an idle relay writes nothing.
        """
        position = self.position
        # Read and let go: no transaction stays open while the destination is slow.
        with self.engine.connect() as conn:
            rows, after = feed.next_batch(conn, position, self.batch_size)
        if not rows:
            self._position = after
            return 0
        chosen = [row for row in rows if self.filter(row)]
        if chosen:
            self._deliver(Batch(chosen, list(lines(chosen, "ndjson"))))
        assert self._claim is not None  # taken with the position
        self._claim.save(self.engine, after)
        self._position = after
        return len(rows)

    def start(self) -> Relay:
        """Run in a daemon thread; returns the relay (call :meth:`stop` to end it).

        The stored position is read (or, for a new stream, set) before it
        returns, so ``start="now"`` means now, and a database the relay cannot
        use raises here rather than in the thread.
        """
        if self._thread is not None:
            raise ConfigurationError(f"stream {self.name!r} is already running in this relay")
        _ = self.position
        self._thread = threading.Thread(target=self.run, name=f"whodid-stream-{self.name}")
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 10) -> None:
        """Stop after the batch in hand; one still being retried stays unshipped (and
        is sent first by the next relay). Waits up to ``timeout`` for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _deliver(self, batch: Batch) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                self.destination.send(batch)
                self.delivered += len(batch)
                return
            except DeliveryError as exc:
                self.failures += 1
                if self.dead_letter is not None and attempt >= self.max_attempts:
                    self._bury(batch, exc)
                    return
                delay = random.uniform(0, min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
                log.warning(
                    "stream %s: attempt %d failed (%s); retrying in %.2f s",
                    self.name,
                    attempt,
                    exc,
                    delay,
                )
                self._sleep(delay)
                if self._stop.is_set():
                    raise _Stopped from exc

    def _bury(self, batch: Batch, exc: Exception) -> None:
        assert self.dead_letter is not None
        with open(self.dead_letter, "ab") as file:
            file.write(batch.body)
            file.flush()
            os.fsync(file.fileno())
        self.dead_lettered += 1
        first, last = batch.seqs
        log.error(
            "stream %s: seqs %d-%d (%d entries) failed %d times (%s); written to %s",
            self.name,
            first,
            last,
            len(batch),
            self.max_attempts,
            exc,
            self.dead_letter,
        )
