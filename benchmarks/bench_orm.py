"""Workloads 3 and 4: ORM write transactions, audited by each contender vs bare.

Every contender lives in its own worker process (multiprocessing, spawn) with
its own databases: the peers install process-wide SQLAlchemy listeners
(Continuum and PostgreSQL-Audit hook every Session and Mapper), which would
otherwise tax the baseline too. The coordinator tells the workers in turn to
run one round, so rounds stay interleaved across processes.

- crud: per cycle three transactions, each in a fresh Session, as a web request
  does it: insert (add + commit), update (get + change two columns + commit),
  delete (get + delete + commit). Each is timed on its own; a round's figure is
  the median over its cycles.
- bulk: one Session adds 10,000 new rows and commits (one flush). The objects
  are built before the clock starts.

Contenders: bare (no auditing), whodid (Auditor.track + instrument, inside an
audit_context carrying actor, tenant, IP, user agent and request id, as the
middleware would provide), floor (bare plus, after each flush, the same entry
rows whodid writes, built before the clock starts and sent through the raw
DBAPI cursor, or on the COMMIT as whodid sends them on psycopg: what the
database alone charges for an audit row, the least any row-per-change audit
log can cost), floor + change capture (the floor, plus
whodid's own reading of each flushed object: its tracked columns, and the
attribute history of an update, with active history on as whodid sets it;
everything whodid does but building and encoding the entries), floor +
capture + minimal entries (each change made into the least entry the
contract asks for, in the flush: a random id, a clock read, the context's
fields, sorted-key JSON and a SHA-256, encoded by orjson in one call; the
floor for whodid's own code),
SQLAlchemy-Continuum (make_versioned; version table plus its transaction
table), PostgreSQL-Audit (statement-level triggers into
its activity table plus a transaction row with actor and client address;
PostgreSQL only).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import multiprocessing
import os
import statistics
import time
import traceback
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

CONTENDERS = {
    "bare": ("bare SQLAlchemy (baseline)", None),
    "whodid": ("whodid", None),
    "floor": ("floor (bare + the entry row alone)", None),
    "capture": ("floor + change capture", None),
    "minimal": ("floor + capture + minimal entries", None),
    "continuum": ("SQLAlchemy-Continuum", "sqlalchemy_continuum"),
    "pgaudit": ("PostgreSQL-Audit", "postgresql_audit"),
}
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"


def available(name: str) -> bool:
    module = CONTENDERS[name][1]
    return module is None or importlib.util.find_spec(module) is not None


def supports(name: str, db: str) -> bool:
    return not (name == "pgaudit" and db != "postgresql")


# -- inside a worker process ------------------------------------------------------


class Setup:
    """One contender's model, schema and sessions on each database."""

    def __init__(self, contender: str, urls: dict[str, str]) -> None:
        import sqlalchemy as sa
        from sqlalchemy.orm import DeclarativeBase, sessionmaker

        self.contender = contender
        self.sa = sa
        manager: Any = None
        if contender == "continuum":
            from sqlalchemy_continuum import make_versioned

            make_versioned(user_cls=None)

        class Base(DeclarativeBase):
            pass

        if contender == "pgaudit":
            from postgresql_audit import versioning_manager

            manager = versioning_manager
            manager.init(Base)
            manager.values = {"actor_id": "usr_1", "client_addr": "203.0.113.7"}

        versioned = contender in ("continuum", "pgaudit")

        class Item(Base):
            __tablename__ = "items"
            if versioned:
                __versioned__ = {}
            id = sa.Column(sa.Integer, primary_key=True)
            name = sa.Column(sa.String(100), nullable=False)
            email = sa.Column(sa.String(200), nullable=False)
            amount = sa.Column(sa.Numeric(12, 2), nullable=False)
            status = sa.Column(sa.String(20), nullable=False)
            created_at = sa.Column(sa.DateTime(timezone=True), nullable=False)

        sa.orm.configure_mappers()
        self.Item = Item
        self.engines: dict[str, Any] = {}
        self.sessions: dict[str, Any] = {}
        self.auditor: Any = None
        capture: Any = None
        if contender == "whodid":
            from whodid import Auditor

            self.auditor = Auditor()
            self.auditor.track(Item, feature="customer")
        elif contender in ("capture", "minimal"):
            from whodid import Auditor

            tracker = Auditor()
            tracker.track(Item, feature="customer")
            capture = tracker.capture  # its specs and hooks, never installed

        for db, url in urls.items():
            if not supports(contender, db):
                continue
            engine = sa.create_engine(url)
            if engine.dialect.name == "sqlite":
                sa.event.listen(engine, "connect", _sqlite_pragmas)
            Base.metadata.drop_all(engine)
            if manager is not None:
                # PostgreSQL-Audit's audit_table() function is created along with its
                # activity table; SQLAlchemy 2.x creates `items` first otherwise.
                Base.metadata.create_all(
                    engine,
                    tables=[manager.transaction_cls.__table__, manager.activity_cls.__table__],
                )
            Base.metadata.create_all(engine)
            Session = sessionmaker(engine, expire_on_commit=False)
            if self.auditor is not None:
                self.auditor.create_all(engine)
                self.auditor.instrument(Session)
            if contender in ("floor", "capture", "minimal"):
                _install_floor(engine, Session, self.context, capture, contender == "minimal")
            self.engines[db] = engine
            self.sessions[db] = Session
        self.counter = 0

    def context(self) -> Any:
        if self.contender not in ("whodid", "floor", "capture", "minimal"):
            return contextlib.nullcontext()
        from whodid import Actor, audit_context

        return audit_context(
            actor=Actor.user("usr_1", label="ada@example.com"),
            tenant_id="org_1",
            ip="203.0.113.7",
            user_agent=UA,
            request_id=os.urandom(16).hex(),
        )

    def new_item(self) -> Any:
        self.counter += 1
        i = self.counter
        return self.Item(
            name=f"Customer {i}",
            email=f"customer{i}@example.com",
            amount=Decimal("12.34"),
            status="active",
            created_at=dt.datetime.now(dt.UTC),
        )

    def crud(self, db: str, n: int) -> dict[str, float]:
        """Median µs of insert, update and delete transactions over ``n`` cycles."""
        Session = self.sessions[db]
        Item = self.Item
        perf = time.perf_counter
        times: dict[str, list[float]] = {"insert": [], "update": [], "delete": []}
        for _ in range(n):
            obj = self.new_item()
            with self.context(), Session() as s:
                t = perf()
                s.add(obj)
                s.commit()
                times["insert"].append(perf() - t)
            pk = obj.id
            with self.context(), Session() as s:
                t = perf()
                row = s.get(Item, pk)
                row.status = "suspended"
                row.amount = Decimal("99.50")
                s.commit()
                times["update"].append(perf() - t)
            with self.context(), Session() as s:
                t = perf()
                s.delete(s.get(Item, pk))
                s.commit()
                times["delete"].append(perf() - t)
        return {op: statistics.median(v) * 1e6 for op, v in times.items()}

    def bulk(self, db: str, n: int) -> float:
        """Seconds to add ``n`` new rows in one Session and commit (one flush)."""
        import gc

        objs = [self.new_item() for _ in range(n)]
        Session = self.sessions[db]
        with self.context(), Session() as s:
            gc.collect()
            t = time.perf_counter()
            s.add_all(objs)
            s.commit()
            took = time.perf_counter() - t
        return took

    def audit_rows(self, db: str) -> int:
        """How many audit records this contender has written (a sanity check)."""
        table = {
            "whodid": "whodid_entries",
            "floor": "whodid_entries",
            "capture": "whodid_entries",
            "minimal": "whodid_entries",
            "continuum": "items_version",
            "pgaudit": "activity",
        }.get(self.contender)
        if table is None:
            return 0
        with self.engines[db].connect() as conn:
            return int(conn.execute(self.sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def _install_floor(
    engine: Any,
    Session: Any,
    context: Callable[[], Any],
    capture: Any = None,
    minimal: bool = False,
) -> None:
    """After each flush, insert one entry row per flushed object.

    The rows are whodid's own (Writer.rows, before the clock starts); only a
    counter makes each id unique. Sent on the flush's connection through the
    raw DBAPI cursor (COPY on PostgreSQL from 200 rows, like whodid), or, for
    the flush of a commit on psycopg, on the COMMIT itself as whodid sends
    them (send_with_commit.CommitSender).

    With ``capture`` (an OrmCapture holding the model's spec), each flushed
    object is first read as whodid's after_flush reads it, and the changes
    are thrown away: the cost of capturing, without building entries.

    With ``minimal`` too, each change becomes the least entry the contract
    asks for, built in the flush: see :func:`_minimal_builder`.
    """
    import itertools

    import sqlalchemy as sa

    from whodid.store import schema
    from whodid.store.drivers.base import CHUNK as _CHUNK
    from whodid.store.drivers.base import COLUMNS as _COLUMNS
    from whodid.store.drivers.base import insert_sql as _insert_sql
    from whodid.store.drivers.base import row_values as _values
    from whodid.store.drivers.postgres import COPY_THRESHOLD
    from whodid.store.drivers.send_with_commit import CommitSender
    from whodid.store.writer import Change, Writer

    schema.create_all(engine)
    sqlite = engine.dialect.name == "sqlite"
    with context():
        row = Writer().rows([Change("customer", "create", "Item", "1", after=_AFTER)])[0]
    template = _values(row, sqlite)
    ids = itertools.count()

    def rows(n: int) -> list[list[Any]]:
        out = []
        for _ in range(n):
            values = list(template)
            values[0] = f"log_{next(ids):026d}"
            out.append(values)
        return out

    # On psycopg the rows of the commit's own flush ride on the COMMIT through
    # whodid's CommitSender, as whodid's do: the floors must send their rows
    # the cheapest way whodid knows, or they would not be floors.
    rider = None if sqlite else CommitSender(_COLUMNS, lambda values: values)
    build = _minimal_builder(template, sqlite) if minimal else None

    def before_commit(session: Any) -> None:
        session.info[_COMMITTING] = True

    def after_transaction_end(session: Any, transaction: Any) -> None:
        if transaction.parent is None:
            session.info.pop(_COMMITTING, None)

    def after_flush(session: Any, flush_context: Any) -> None:
        if capture is None:
            ready = rows(len(flush_context.states))
        elif build is not None:
            ready = build(capture.changes(flush_context))
        else:
            ready = rows(len(capture.changes(flush_context)))
        n = len(ready)
        connection = session.connection()
        if (
            rider is not None
            and session.info.get(_COMMITTING)
            and rider.eligible(connection)
            and rider.hold(connection, ready)
        ):
            return
        raw = connection.connection.dbapi_connection
        cursor = raw.cursor()
        try:
            if not sqlite and n >= COPY_THRESHOLD:
                columns = ", ".join(c.name for c in schema.entries.columns if c.name != "seq")
                with cursor.copy(f"COPY whodid_entries ({columns}) FROM STDIN") as copy:
                    for values in ready:
                        copy.write_row(values)
                return
            for at in range(0, n, _CHUNK):
                chunk = ready[at : at + _CHUNK]
                style = "qmark" if sqlite else "format"
                cursor.execute(_insert_sql(style, len(chunk)), [v for r in chunk for v in r])
        finally:
            cursor.close()

    sa.event.listen(Session, "after_flush", after_flush)
    if rider is not None:
        sa.event.listen(Session, "before_commit", before_commit)
        sa.event.listen(Session, "after_transaction_end", after_transaction_end)


def _minimal_builder(template: list[Any], sqlite: bool) -> Callable[[list[Any]], list[list[Any]]]:
    """A function making changes into the least entry rows the contract allows.

    Per change: a random id, one clock read, the context's fields (actor,
    tenant, passkey, IP, user agent, request id), the before and after
    objects as sorted-key JSON, and a SHA-256 over all of it, encoded by
    orjson in one call. Nothing is bounded, checked or enriched (the client
    description and the country are the template's), so no implementation
    of whodid's entries can build them for less in Python: the floor for
    whodid's own code. Everything that does not depend on the change is
    looked up here, once.
    """
    from hashlib import sha256

    import orjson

    from whodid.context import current_context
    from whodid.store.drivers.base import COLUMNS as _COLUMNS

    at = {name: i for i, name in enumerate(_COLUMNS)}
    at_before, at_after, at_time, at_digest = (
        at[name] for name in ("before", "after", "occurred_at", "digest")
    )
    sort = orjson.OPT_SORT_KEYS
    dumps, fragment, urandom, now_in = orjson.dumps, orjson.Fragment, os.urandom, dt.datetime.now
    utc = dt.UTC

    def build(changes: list[Any]) -> list[list[Any]]:
        ctx = current_context()
        actor = ctx.actor
        now = now_in(utc)
        stamp = now.isoformat()
        stored = now.replace(tzinfo=None).isoformat(" ", "microseconds") if sqlite else now
        fields = {
            "actor_type": actor.type,
            "actor_id": actor.id,
            "actor_label": actor.label,
            "tenant_id": ctx.tenant_id,
            "passkey": ctx.passkey,
            "ip": ctx.ip,
            "user_agent": ctx.user_agent,
            "request_id": ctx.request_id,
        }
        out = []
        for change in changes:
            before = None if change.before is None else dumps(change.before, option=sort)
            after = None if change.after is None else dumps(change.after, option=sort)
            doc = {
                **fields,
                "id": "log_" + urandom(13).hex(),
                "occurred_at": stamp,
                "action": f"{change.feature}.{change.operation}",
                "feature": change.feature,
                "operation": change.operation,
                "entity_type": change.entity_type,
                "entity_id": change.entity_id,
                "before": None if before is None else fragment(before),
                "after": None if after is None else fragment(after),
            }
            values = list(template)
            for name, value in doc.items():
                values[at[name]] = value
            values[at_before] = None if before is None else before.decode()
            values[at_after] = None if after is None else after.decode()
            values[at_time] = stored
            values[at_digest] = sha256(dumps(doc, option=sort)).hexdigest()
            out.append(values)
        return out

    return build


_COMMITTING = "floor_committing"

_AFTER = {
    "id": 1,
    "name": "Customer 1",
    "email": "customer1@example.com",
    "amount": "12.34",
    "status": "active",
    "created_at": "2026-11-22T07:00:00.000000Z",
}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def worker_main(conn: Any, contender: str, urls: dict[str, str]) -> None:
    try:
        setup = Setup(contender, urls)
        for db in setup.sessions:  # warm: first statements, caches, pool
            setup.crud(db, 3)
        conn.send(("ready", None))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        command, args = conn.recv()
        if command == "stop":
            return
        try:
            conn.send(("ok", getattr(setup, command)(*args)))
        except BaseException:
            conn.send(("error", traceback.format_exc()))


# -- the coordinator --------------------------------------------------------------


class WorkerError(RuntimeError):
    pass


class Worker:
    def __init__(self, contender: str, urls: dict[str, str]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=worker_main, args=(child, contender, urls), name=f"bench-{contender}"
        )
        self.proc.start()
        child.close()
        self.contender = contender

    def wait_ready(self, timeout: float = 180) -> None:
        self._recv(timeout)

    def call(self, command: str, *args: Any, timeout: float = 600) -> Any:
        self.conn.send((command, args))
        return self._recv(timeout)

    def _recv(self, timeout: float) -> Any:
        if not self.conn.poll(timeout):
            raise WorkerError(f"{self.contender}: no answer in {timeout:.0f} s")
        try:
            kind, value = self.conn.recv()
        except EOFError:
            self.proc.join(5)
            raise WorkerError(
                f"{self.contender}: worker process died (exit code {self.proc.exitcode})"
            ) from None
        if kind == "error":
            raise WorkerError(value)
        return value

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send(("stop", ()))
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


@contextlib.contextmanager
def workers(
    urls_for: Callable[[str], dict[str, str]],
) -> Iterator[tuple[dict[str, Worker], dict[str, str]]]:
    """Started workers for every installed contender, and why any other is missing."""
    started: dict[str, Worker] = {}
    missing: dict[str, str] = {}
    for name, (_, module) in CONTENDERS.items():
        if available(name):
            started[name] = Worker(name, urls_for(name))
        else:
            missing[name] = f"not installed (pip install -e '.[bench]' for {module})"
    try:
        for name in list(started):
            try:
                started[name].wait_ready()
            except WorkerError as exc:
                missing[name] = "failed to set up: " + _last_line(str(exc))
                missing[name + ":traceback"] = str(exc)
                started.pop(name).stop()
        yield started, missing
    finally:
        for worker in started.values():
            worker.stop()


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


# -- the tables -------------------------------------------------------------------

DB_LABEL = {"postgresql": "PostgreSQL", "sqlite": "SQLite (WAL)"}
CRUD_TARGET = {"postgresql": 1.25, "sqlite": 1.3}
BULK_CAP_S = 15.0
BULK_TARGET = {"postgresql": 1.3}
PEERS = ("continuum", "pgaudit")
FLOORS = (
    ("floor", "the entry row"),
    ("capture", "the entry row + change capture"),
    ("minimal", "the entry row + capture + minimal entries"),
)


def _columns(first: list[str], unit: str) -> list[str]:
    cols = [*first, f"bare {unit}"]
    for name in ("whodid", "floor", "capture", "minimal", *PEERS):
        label = CONTENDERS[name][0]
        cols += [f"{label} {unit}", f"{label} / bare"]
    return [*cols, f"whodid over floor {unit}", "target (whodid)", "status"]


def _cells(
    results: dict[str, list[float]],
    names: list[str],
    missing: dict[str, str],
    db: str,
    unit: str,
    scale: float,
    digits: int,
) -> dict[str, Any]:
    from common import fmt_delta, fmt_num, fmt_ratio, median, paired_deltas, paired_ratios

    base = results["bare"]
    cells: dict[str, Any] = {f"bare {unit}": fmt_num(median(base) * scale, digits)}
    for name in ("whodid", "floor", "capture", "minimal", *PEERS):
        label = CONTENDERS[name][0]
        if name not in names:
            why = missing.get(name) or ("PostgreSQL only" if not supports(name, db) else "n/a")
            cells[f"{label} {unit}"] = why
            cells[f"{label} / bare"] = "n/a"
            continue
        cells[f"{label} {unit}"] = fmt_num(median(results[name]) * scale, digits)
        cells[f"{label} / bare"] = fmt_ratio(paired_ratios(results[name], base))
    # What whodid's own code adds to the database's cost of its row. The ratios
    # also move with the speed of the bare transaction; this does not, directly.
    both = "whodid" in names and "floor" in names
    deltas = paired_deltas(results["whodid"], results["floor"]) if both else []
    cells[f"whodid over floor {unit}"] = fmt_delta([d * scale for d in deltas], digits)
    return cells


def _verdict(
    results: dict[str, list[float]],
    names: list[str],
    target: float | None,
    against_peers: bool,
) -> tuple[str, str]:
    from common import MET, MISSED, NO_TARGET, median, paired_ratios

    if "whodid" not in results:
        return NO_TARGET, NO_TARGET
    ratio = median(paired_ratios(results["whodid"], results["bare"]))
    problems = []
    if target is not None and ratio > target:
        problems.append(f"{ratio:.2f}x > {target:.2f}x")
        # Whether the target was within reach at all in this run: the most
        # complete floor over it (the least entry building, else the
        # database's row alone) says that no implementation of the contract
        # meets it.
        for floor, what in reversed(FLOORS):
            if floor in results:
                at = median(paired_ratios(results[floor], results["bare"]))
                if at > target:
                    problems.append(f"out of reach: {what} alone is {at:.2f}x")
                    break
    if against_peers:
        for peer in PEERS:
            if peer in names and median(results["whodid"]) >= median(results[peer]):
                problems.append(f"not below {CONTENDERS[peer][0]}")
    wanted = []
    if target is not None:
        wanted.append(f"<= {target:.2f}x bare")
    if against_peers:
        wanted.append("below peers")
    if not wanted:
        return NO_TARGET, NO_TARGET
    return ", ".join(wanted), (MET if not problems else f"{MISSED}: " + "; ".join(problems))


def sections(
    dbs: list[str],
    urls_for: Callable[[str], dict[str, str]],
    crud_rounds: int,
    crud_cycles: int,
    bulk_rounds: int,
    bulk_rows: int,
) -> list[Any]:
    from common import Section, interleave

    crud = Section(
        "crud",
        "Single-row write transactions (ORM Session, commit each)",
        _columns(["database", "operation"], "µs"),
        intro=(
            f"{crud_rounds} interleaved rounds of {crud_cycles} insert/update/delete cycles per "
            "contender, each contender in its own process and database; a round's figure is "
            "the median transaction time; ratios are medians of per-round paired ratios "
            "(interquartile range in brackets)."
        ),
        label_cols=["database", "operation"],
        figure_cols=[
            "whodid / bare",
            "whodid µs",
            "floor (bare + the entry row alone) / bare",
            "floor + change capture / bare",
            "floor + capture + minimal entries / bare",
            "whodid over floor µs",
            "SQLAlchemy-Continuum µs",
            "PostgreSQL-Audit µs",
        ],
    )
    bulk = Section(
        "bulk",
        f"One flush of {bulk_rows:,} inserts",
        _columns(["database"], "ms"),
        intro=(
            f"add_all({bulk_rows:,} new objects) + commit in one Session; objects built before "
            f"the clock starts; {bulk_rounds} interleaved rounds. A contender whose flush "
            f"takes over {BULK_CAP_S:.0f} s is not run again after its first round (the "
            "figure then says how many rounds it ran)."
        ),
        label_cols=["database"],
        figure_cols=[
            "whodid / bare",
            "whodid ms",
            "floor (bare + the entry row alone) / bare",
            "floor + change capture / bare",
            "floor + capture + minimal entries / bare",
            "whodid over floor ms",
        ],
    )
    crud.notes.append(
        "PostgreSQL-Audit with SQLAlchemy 2.x: `metadata.create_all()` creates the audited "
        "table before PostgreSQL-Audit's `activity` table, whose DDL hook defines the "
        "`audit_table()` function the audited table's hook calls, so it fails with "
        "`function audit_table(unknown) does not exist`; the suite creates `transaction` and "
        "`activity` first. SQLAlchemy-Continuum needs no workaround."
    )
    with workers(urls_for) as (started, missing):
        for key, text in missing.items():
            if key.endswith(":traceback"):
                crud.notes.append(f"{key.split(':')[0]} set-up traceback:\n\n```\n{text}\n```")
        for db in dbs:
            names = [n for n in started if supports(n, db)]
            raw = interleave(
                names,
                crud_rounds,
                lambda n, r, db=db: started[n].call("crud", db, crud_cycles),
            )
            for op in ("insert", "update", "delete"):
                results = {n: [r[op] for r in raw[n]] for n in names}
                target, verdict = _verdict(results, names, CRUD_TARGET.get(db), True)
                crud.add(
                    f"{db}/{op}",
                    database=DB_LABEL[db],
                    operation=op,
                    **_cells(results, names, missing, db, "µs", 1.0, 0),
                    **{"target (whodid)": target, "status": verdict},
                )
            slow: set[str] = set()

            def flush(n: str, r: int, db: str = db, slow: set[str] = slow) -> float | None:
                if n in slow:
                    return None
                took = float(started[n].call("bulk", db, bulk_rows))
                if took > BULK_CAP_S:
                    slow.add(n)
                return took

            results = interleave(names, bulk_rounds, flush)
            target, verdict = _verdict(results, names, BULK_TARGET.get(db), False)
            cells = _cells(results, names, missing, db, "ms", 1000.0, 0)
            for n in slow:
                ran = sum(v is not None for v in results[n])
                if ran < bulk_rounds:
                    cells[f"{CONTENDERS[n][0]} ms"] += f" ({ran} round{'s' * (ran != 1)})"
            bulk.add(
                db,
                database=DB_LABEL[db],
                **cells,
                **{"target (whodid)": target, "status": verdict},
            )
            counts = {n: started[n].call("audit_rows", db) for n in names if n != "bare"}
            empty = [n for n, c in counts.items() if c == 0]
            if empty:
                raise RuntimeError(f"{db}: no audit records written by {empty}")
            crud.notes.append(
                f"{DB_LABEL[db]}: audit records written during the run: "
                + ", ".join(f"{CONTENDERS[n][0]} {c:,}" for n, c in counts.items())
            )
    return [crud, bulk]
