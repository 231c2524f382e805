"""Free-text search (``q``): the match condition, and the indexer on PostgreSQL.

On SQLite ``q`` is a LIKE over :func:`whodid.schema.search_text` of each
entry. On PostgreSQL the text lives in ``whodid_search`` under a trigram
index, filled off the write path (see schema.py): a match is an indexed entry
whose text matches, or a still-queued one whose text matches. Nothing is ever
missed; entries only get faster to find once :func:`index_pending` has run
(``Auditor.index_search()``, ``Auditor.seal()``, ``whodid index``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from whodid.store.schema import entries, search_queue, search_table, search_text

#: Entries moved into the search table per statement when catching up.
BATCH = 10_000


class Matches(ColumnElement[bool]):
    """``q`` matches an entry: its searched text contains ``pattern`` (a LIKE pattern)."""

    inherit_cache = True
    type = sa.Boolean()
    # The pattern is a bound parameter, so one compiled statement serves every q.
    _traverse_internals = [("pattern", InternalTraversal.dp_clauseelement)]  # noqa: RUF012

    def __init__(self, pattern: str) -> None:
        self.pattern = sa.bindparam("q_pattern", pattern, type_=sa.Text(), unique=True)


def _like(text: Any, pattern: Any) -> Any:
    # Both sides lowered by the database's own lower(), so text always
    # matches itself; case folding is the database's (ASCII on SQLite).
    return text.like(sa.func.lower(pattern), escape="/")


def _matches_scan(element: Matches, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(_like(search_text(), element.pattern), **kw))


def _matches_indexed(element: Matches, compiler: Any, **kw: Any) -> str:
    queued = entries.alias("whodid_queued")
    s, qu = search_table.c, search_queue.c
    # Each queued range read through the primary key: LATERAL, fenced with
    # OFFSET 0 so the planner cannot flatten it into a join, which it would
    # run by filtering the whole log by text first (seconds on a big log).
    hits = (
        sa.select(queued.c.seq)
        .where(queued.c.seq.between(qu.lo, qu.hi))
        .where(_like(search_text(queued), element.pattern))
        .offset(0)
        .lateral("whodid_hits")
    )
    seqs = sa.union_all(
        sa.select(s.seq).where(_like(s.text, element.pattern)),
        sa.select(hits.c.seq).select_from(search_queue).join(hits, sa.true()),
    )
    # = ANY(ARRAY(...)): the matching seqs are collected once, then fetched by
    # primary key. As IN (...) the planner may walk the whole tenant in time
    # order instead, testing each entry against the set.
    column = compiler.process(entries.c.seq, **kw)
    return f"{column} = ANY(ARRAY{compiler.process(seqs.scalar_subquery(), **kw)})"


# Registered by call, not as decorators: compiles() is untyped before SQLAlchemy 2.1.
_compiles: Any = compiles
_compiles(Matches)(_matches_scan)
_compiles(Matches, "postgresql")(_matches_indexed)


def index_pending(conn: Connection, limit: int = BATCH) -> int:
    """Index up to about ``limit`` queued entries, in the caller's transaction.

    Returns how many queue positions it consumed (0: nothing was queued).
    Several indexers may run at once: each takes queue rows the others have
    not locked. Entries of transactions still open are left for a later call,
    since their queue rows are not visible yet.
    """
    if conn.dialect.name != "postgresql":
        return 0
    queued = conn.execute(
        sa.text(
            f"SELECT ctid, lo, hi FROM {search_queue.name} ORDER BY lo "
            "LIMIT 100 FOR UPDATE SKIP LOCKED"
        )
    ).all()
    if not queued:
        # Fresh statistics of the (now empty) queue keep the planner from
        # guessing it holds thousands of ranges, which made q plan a costly
        # read of every range and JIT-compile it.
        conn.exec_driver_sql(f"ANALYZE {search_queue.name}")
        return 0
    text_of = search_text()
    done = 0
    for ctid, lo, hi in queued:
        upto = min(hi, lo + limit - done - 1)
        rows = sa.select(entries.c.seq, text_of).where(entries.c.seq.between(lo, upto))
        conn.execute(
            sa.dialects.postgresql.insert(search_table)
            .from_select(["seq", "text"], rows)
            .on_conflict_do_nothing()
        )
        if upto < hi:
            conn.execute(
                sa.text(f"UPDATE {search_queue.name} SET lo = :lo WHERE ctid = :ctid"),
                {"lo": upto + 1, "ctid": ctid},
            )
        else:
            conn.execute(
                sa.text(f"DELETE FROM {search_queue.name} WHERE ctid = :ctid"), {"ctid": ctid}
            )
        done += upto - lo + 1
        if done >= limit:
            break
    return done


def forget(conn: Connection) -> None:
    """Drop the search text of entries no longer in the log (after a purge)."""
    if conn.dialect.name != "postgresql":
        return
    conn.execute(
        sa.delete(search_table).where(~sa.exists().where(entries.c.seq == search_table.c.seq))
    )
