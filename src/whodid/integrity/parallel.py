"""Sharing verify between processes: seq ranges checked by helper processes.

Checking a large log is CPU-bound (canonical JSON, SHA-256), so verify()
splits it in seq ranges (_plan) and checks them in this process and in helper
processes started with ``python -c`` (_Helper, _helper_main), each reading
through its own connection to the same URL; _check_shared() hands out the
ranges and gathers the parts in order. Kept apart from integrity.py because
it is process plumbing, not what verify checks: a helper runs
verify_ranges._check_range() exactly as this process does.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import logging
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from whodid.integrity.ranges import _check_range, _Part, _Promises
from whodid.store.schema import entries

#: Logs spanning fewer seqs than this are verified by this process alone;
#: larger ones in seq ranges shared with helper processes (see verify()).
PARALLEL_MIN = 200_000
#: At most this many processes verify one log unless ``workers`` asks for more.
MAX_WORKERS = 4
_RANGES_PER_WORKER = 8


class _Tally:
    """Progress of verify: this thread's rows, and those helper threads report."""

    def __init__(self, progress: Callable[[int], None] | None) -> None:
        self._progress = progress
        self._lock = threading.Lock()
        self._remote = 0
        self.reported = 0

    def remote(self, n: int) -> None:
        with self._lock:
            self._remote += n

    def tick(self, n: int) -> None:
        with self._lock:
            n, self._remote = n + self._remote, 0
        self.reported += n
        if self._progress is not None:
            self._progress(n)


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _shareable(conn: Connection) -> bool:
    """Whether other processes can open this database from its URL and read it fast."""
    dialect, url = conn.dialect, conn.engine.url
    if (dialect.name, dialect.driver) == ("postgresql", "psycopg"):
        return bool(sys.executable)
    if (dialect.name, dialect.driver) == ("sqlite", "pysqlite"):
        database = url.database or ""
        memory = database in ("", ":memory:") or "mode=memory" in database
        return bool(sys.executable) and not memory and "mode=memory" not in str(url.query)
    return False


def _fingerprint(conn: Connection) -> list[tuple[Any, ...]]:
    """Seq and id of the first and last entries: tells a helper it opened the same log."""
    c = entries.c
    first = sa.select(sa.func.min(c.seq)).scalar_subquery()
    top = sa.select(sa.func.max(c.seq)).scalar_subquery()
    rows = conn.execute(
        sa.select(c.seq, c.id).where(sa.or_(c.seq == first, c.seq == top)).order_by(c.seq)
    ).all()
    return [tuple(r) for r in rows]


def _plan(
    conn: Connection, workers: int | None
) -> tuple[list[tuple[int | None, int | None]], int, list[tuple[Any, ...]]] | None:
    """Seq ranges and how many helper processes to start, or None to stay alone."""
    fingerprint = _fingerprint(conn)
    if not fingerprint:
        return None
    first, top = fingerprint[0][0], fingerprint[-1][0]
    span = top - first + 1
    if workers is None:
        workers = min(_usable_cpus(), MAX_WORKERS) if span >= PARALLEL_MIN else 1
    if workers <= 1:
        return None
    step = max(-(-span // (workers * _RANGES_PER_WORKER)), 1)
    cuts = list(range(first + step, top + 1, step))
    starts: list[int | None] = [None, *cuts]
    stops: list[int | None] = [*cuts, None]
    return list(zip(starts, stops, strict=True)), workers - 1, fingerprint


# The helper imports whodid.integrity.parallel without running whodid/__init__.py, which
# imports the whole library (0.5 s more of start-up on every verify).
_HELPER_BOOT = """
import importlib.util, pickle, sys, types
sys.path[:] = pickle.load(sys.stdin.buffer)
spec = importlib.util.find_spec("whodid")
package = types.ModuleType("whodid")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["whodid"] = package
from whodid.integrity.parallel import _helper_main
_helper_main()
"""


class _Helper:
    """A helper process checking seq ranges on its own connection (see _helper_main)."""

    def __init__(self, setup: tuple[Any, ...]) -> None:
        self._setup = setup
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _HELPER_BOOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def run(
        self,
        tasks: list[tuple[int | None, int | None, dict[int, bytes]]],
        todo: collections.deque[int],
        results: list[_Part | None],
        tally: _Tally,
    ) -> None:
        """Take ranges from ``todo`` until none is left; put one back if it fails."""
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin is not None and stdout is not None
        try:
            pickle.dump(sys.path, stdin)
            pickle.dump(self._setup, stdin, protocol=pickle.HIGHEST_PROTOCOL)
        except OSError:
            return
        while True:
            try:
                i = todo.popleft()
            except IndexError:
                return
            try:
                # Pickled first, then one write: pickle.dump() to the pipe writes
                # 64 KiB frames, and after each one this thread waits for the GIL
                # that this process's own range check holds, while the helper
                # waits for the rest of its range (at 1M entries, the helper's
                # waits for work went from 0.34 s in all to 0.16 s).
                stdin.write(pickle.dumps(tasks[i], protocol=pickle.HIGHEST_PROTOCOL))
                stdin.flush()
                status, part = pickle.load(stdout)
                if status != "ok":
                    raise RuntimeError(part)
            except Exception as exc:
                # This process checks the range itself: a database error then
                # surfaces here, with its own type and message.
                logging.getLogger("whodid.integrity.verify").debug("verify helper failed: %r", exc)
                todo.append(i)
                return
            results[i] = part
            tally.remote(part.seen)

    def close(self) -> None:
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _check_shared(
    conn: Connection,
    bounds: list[tuple[int | None, int | None]],
    helpers: int,
    fingerprint: list[tuple[Any, ...]],
    expected: dict[int, bytes],
    promises: _Promises,
    batch: int,
    tally: _Tally,
) -> list[_Part]:
    """Check the ranges here and in ``helpers`` processes, each taking the next
    range left when done with one; returns the parts in range order."""
    keys = sorted(expected)
    tasks: list[tuple[int | None, int | None, dict[int, bytes]]] = []
    for lo, stop in bounds:
        a = 0 if lo is None else bisect.bisect_left(keys, lo)
        b = len(keys) if stop is None else bisect.bisect_left(keys, stop)
        mine = keys[a:b]
        tasks.append((lo, stop, dict(zip(mine, map(expected.__getitem__, mine), strict=True))))
    results: list[_Part | None] = [None] * len(tasks)
    todo = collections.deque(range(len(tasks)))
    url = conn.engine.url.render_as_string(hide_password=False)
    setup = (url, batch, promises, fingerprint)
    started: list[_Helper] = []
    threads: list[threading.Thread] = []
    try:
        for _ in range(helpers):
            try:
                helper = _Helper(setup)
            except OSError:
                break
            started.append(helper)
            thread = threading.Thread(
                target=helper.run, args=(tasks, todo, results, tally), daemon=True
            )
            thread.start()
            threads.append(thread)
        while True:
            try:
                i = todo.popleft()
            except IndexError:
                for thread in threads:
                    thread.join()
                if not todo:
                    break
                continue
            lo, stop, promised = tasks[i]
            results[i] = _check_range(conn, lo, stop, promised, promises, batch, tally.tick)
    finally:
        for helper in started:
            helper.close()
    done = [part for part in results if part is not None]
    assert len(done) == len(results)
    return done


def _helper_main() -> None:
    """A helper process of verify(): checks the seq ranges sent on stdin."""
    source = sys.stdin.buffer
    sink = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must not end up in the replies
    url, batch, promises, fingerprint = pickle.load(source)
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            same_log = _fingerprint(conn) == fingerprint
            while True:
                try:
                    lo, stop, expected = pickle.load(source)
                except EOFError:
                    return
                reply: tuple[str, Any]
                if not same_log:
                    reply = ("error", f"{url} holds another log")
                else:
                    try:
                        reply = (
                            "ok",
                            _check_range(conn, lo, stop, expected, promises, batch, None),
                        )
                    except Exception as exc:
                        reply = ("error", repr(exc))
                pickle.dump(reply, sink, protocol=pickle.HIGHEST_PROTOCOL)
                sink.flush()
    finally:
        engine.dispose()
