"""How verify reads the entries fast, from each driver.

Each reader yields _EntryRow tuples: the SHA-256 of the entry's canonical
bytes, exactly entry.canonical() of the row as SQLAlchemy would return it, and
whether that matches the digest stored with it. The fast readers take plain
tuples from the DBAPI cursor, get the time as canonical text and epoch µs
without building a datetime where they can, and encode through fastjson; any
entry fastjson cannot vouch for goes through the row as SQLAlchemy would build
it and canonical() itself.

On SQLite the JSON documents are stored as canonical text (the writer and
schema._SQLiteJSON both write it so), and the reader first splices that text
into the entry's bytes as it is, without decoding it. If the hash of those
bytes is the stored digest, they are the bytes whodid hashed when it wrote the
entry, so they are its canonical bytes too; otherwise the reader decodes the
documents and re-encodes them as above, so text that is not canonical (or not
JSON at all) is judged on what it holds. The one difference from decoding
every entry: text that someone rewrote and re-hashed in its non-canonical form
passes the self-check, as canonically rewritten text with a fresh digest
would; a sealed entry still fails against its checkpoint either way.

Separate from the checks themselves (verify_ranges.py) because this is where
the speed comes from and where each driver's quirks live: _entry_rows() picks
_postgresql_rows() (psycopg), _sqlite_rows() (sqlite3) or _generic_rows()
(any other driver, through SQLAlchemy rows), which all yield the same rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from whodid.entry import fastjson
from whodid.entry.fields import CONTENT_FIELDS, canonical, iso, utc
from whodid.integrity.checkpoints import _EPOCH
from whodid.store.schema import entries

_US = dt.timedelta(microseconds=1)
_NAIVE_EPOCH = dt.datetime(1970, 1, 1)
_JSON_FIELDS = ("client", "metadata", "before", "after")
_SCALAR_FIELDS = tuple(n for n in CONTENT_FIELDS if n != "occurred_at" and n not in _JSON_FIELDS)
_TEXT_OR_NULL = frozenset({str, type(None)})
_cursor_names = itertools.count()

#: (seq, entry id, SHA-256 of the canonical bytes, whether that is the stored
#: digest, occurred_at in µs) of one entry.
_EntryRow = tuple[int, str, bytes, bool, int]


def _hashed(data: bytes, stored: Any) -> tuple[bytes, bool]:
    hashed = hashlib.sha256(data)
    return hashed.digest(), hashed.hexdigest() == stored


def _micros(when: dt.datetime) -> int:
    return (utc(when) - _EPOCH) // _US


def _processors(conn: Connection) -> dict[str, Any]:
    dialect = conn.dialect
    return {
        c.name: c.type.dialect_impl(dialect).result_processor(dialect, None)
        for c in entries.columns
    }


def _entry_rows(
    conn: Connection, lo: int | None, stop: int | None, batch: int
) -> Iterator[_EntryRow]:
    dialect = conn.dialect
    procs = _processors(conn)
    if (dialect.name, dialect.driver) == ("postgresql", "psycopg") and not any(procs.values()):
        return _postgresql_rows(conn, lo, stop, batch)
    if (dialect.name, dialect.driver) == ("sqlite", "pysqlite") and not any(
        procs[n] for n in _SCALAR_FIELDS if n != "passkey"
    ):
        return _sqlite_rows(conn, lo, stop, batch, procs)
    return _generic_rows(conn, lo, stop, batch)


def _where(conn: Connection, lo: int | None, stop: int | None) -> str:
    seq = conn.dialect.identifier_preparer.quote("seq")
    conds = ([f"{seq} >= {int(lo)}"] if lo is not None else []) + (
        [f"{seq} < {int(stop)}"] if stop is not None else []
    )
    return f" WHERE {' AND '.join(conds)}" if conds else ""


def _generic_rows(
    conn: Connection, lo: int | None, stop: int | None, batch: int
) -> Iterator[_EntryRow]:
    c = entries.c
    names = (*CONTENT_FIELDS, "seq", "digest")
    stmt = sa.select(*(c[n] for n in names)).order_by(c.seq)
    if lo is not None:
        stmt = stmt.where(c.seq >= lo)
    if stop is not None:
        stmt = stmt.where(c.seq < stop)
    result = conn.execution_options(stream_results=True, yield_per=batch).execute(stmt)
    for values in result:
        row = dict(zip(names, values, strict=True))
        actual, consistent = _hashed(canonical(row), row["digest"])
        yield row["seq"], row["id"], actual, consistent, _micros(row["occurred_at"])


def _postgresql_rows(
    conn: Connection, lo: int | None, stop: int | None, batch: int
) -> Iterator[_EntryRow]:
    quote = conn.dialect.identifier_preparer.quote
    col = {n: quote(n) for n in (*CONTENT_FIELDS, "seq", "digest")}
    at = col["occurred_at"]
    # Times Python's datetime holds whatever the session time zone: the rest
    # (and NULL) go through SQLAlchemy's own reading of the row.
    ok = f"{at} >= '0002-01-01 00:00:00+00' AND {at} < '9999-12-31 00:00:00+00'"
    utc_at = f"({at} AT TIME ZONE 'UTC')"
    text = f"""CASE WHEN {ok} THEN to_char({utc_at}, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') END"""
    micros = (
        f"CASE WHEN {ok} THEN extract(epoch FROM date_trunc('second', {utc_at}))::bigint"
        f" * 1000000 + mod(extract(microseconds FROM {utc_at})::bigint, 1000000) END"
    )
    # The four documents as one JSON array text: one decode instead of four,
    # and no JSONB loader. jsonb's text is always valid JSON, so the array is too.
    docs_sql = " || ',' || ".join(f"coalesce({col[n]}::text, 'null')" for n in _JSON_FIELDS)
    sql = (
        f"SELECT {', '.join(col[n] for n in _SCALAR_FIELDS)}, {text}, {micros}, "
        f"{col['seq']}, {col['digest']}, '[' || {docs_sql} || ']' "
        f"FROM {conn.dialect.identifier_preparer.quote(entries.name)}"
        f"{_where(conn, lo, stop)} ORDER BY {col['seq']}"
    )
    names = _SCALAR_FIELDS
    loads, plain, encode = fastjson.loads, fastjson.plain, fastjson.encode
    dbapi: Any = conn.connection.dbapi_connection
    cursor = dbapi.cursor(
        name=f"whodid_verify_{os.getpid()}_{next(_cursor_names)}",
        withhold=bool(dbapi.autocommit),
    )
    try:
        cursor.execute(sql)
        while rows := cursor.fetchmany(batch):
            for r in rows:
                doc = dict(zip(names, r, strict=False))  # the scalars lead the row
                text_at, micros_at, seq, stored, docs_text = r[15:]
                data = None
                if text_at is not None:
                    doc["occurred_at"] = text_at
                    # psycopg gives str, bool or None for the other columns: plain.
                    try:
                        docs = loads(docs_text)
                    except Exception:
                        docs = None
                    if docs is not None and plain(docs):
                        doc["client"], doc["metadata"], doc["before"], doc["after"] = docs
                        data = encode(doc)
                if data is None:
                    # What psycopg's JSONB loader would have returned: json.loads.
                    doc.update(zip(_JSON_FIELDS, json.loads(docs_text), strict=True))
                    if text_at is not None:
                        # Naive, as canonical() reads it: the same text again.
                        doc["occurred_at"] = dt.datetime.fromisoformat(text_at[:-1])
                    else:
                        when = conn.execute(
                            sa.select(entries.c.occurred_at).where(entries.c.seq == seq)
                        ).scalar_one()
                        doc["occurred_at"] = when
                        micros_at = _micros(when)
                    data = canonical(doc)
                actual, consistent = _hashed(data, stored)
                yield seq, doc["id"], actual, consistent, micros_at
    finally:
        cursor.close()


def _sqlite_rows(
    conn: Connection, lo: int | None, stop: int | None, batch: int, procs: dict[str, Any]
) -> Iterator[_EntryRow]:
    quote = conn.dialect.identifier_preparer.quote
    sql = (
        f"SELECT {', '.join(quote(n) for n in _SCALAR_FIELDS)}, {quote('occurred_at')}, "
        f"{quote('seq')}, {quote('digest')}, {', '.join(quote(n) for n in _JSON_FIELDS)} "
        f"FROM {conn.dialect.identifier_preparer.quote(entries.name)}"
        f"{_where(conn, lo, stop)} ORDER BY {quote('seq')}"
    )
    names = _SCALAR_FIELDS
    to_datetime = procs["occurred_at"]
    to_bool = procs["passkey"]
    json_procs = [procs[n] or (lambda v: v) for n in _JSON_FIELDS]
    text_or_null = _TEXT_OR_NULL
    scalars = fastjson.SCALARS
    loads, plain, encode = fastjson.loads, fastjson.plain, fastjson.encode
    naive_epoch = _NAIVE_EPOCH
    us = _US
    fragment, sha256 = orjson.Fragment, hashlib.sha256
    dbapi: Any = conn.connection.dbapi_connection
    cursor = dbapi.cursor()
    try:
        cursor.execute(sql)
        while rows := cursor.fetchmany(batch):
            for r in rows:
                doc = dict(zip(names, r, strict=False))  # the scalars lead the row
                raw_at, seq, stored, client, metadata, before, after = r[15:]
                if to_bool is not None:
                    doc["passkey"] = to_bool(doc["passkey"])
                when = to_datetime(raw_at) if to_datetime is not None else raw_at
                if type(when) is dt.datetime and when.tzinfo is None:
                    text_at = when.isoformat(timespec="microseconds") + "Z"
                    micros_at = (when - naive_epoch) // us
                else:
                    text_at = iso(when)
                    micros_at = _micros(when)
                data = None
                # SQLite keeps any type in any column: the scalars are checked too.
                if (
                    type(client) in text_or_null
                    and type(metadata) in text_or_null
                    and type(before) in text_or_null
                    and type(after) in text_or_null
                    and set(map(type, doc.values())) <= scalars
                ):
                    # The stored text spliced in as it is (see the module docstring).
                    doc["client"] = None if client is None else fragment(client)
                    doc["metadata"] = None if metadata is None else fragment(metadata)
                    doc["before"] = None if before is None else fragment(before)
                    doc["after"] = None if after is None else fragment(after)
                    doc["occurred_at"] = text_at
                    spliced = encode(doc)
                    if spliced is not None:
                        hashed = sha256(spliced)
                        if hashed.hexdigest() == stored:
                            yield seq, doc["id"], hashed.digest(), True, micros_at
                            continue
                    try:
                        docs = [
                            None if client is None else loads(client),
                            None if metadata is None else loads(metadata),
                            None if before is None else loads(before),
                            None if after is None else loads(after),
                        ]
                    except Exception:
                        docs = None
                    if docs is not None and plain(docs):
                        doc["client"], doc["metadata"], doc["before"], doc["after"] = docs
                        doc["occurred_at"] = text_at
                        data = encode(doc)
                if data is None:
                    texts = (client, metadata, before, after)
                    doc.update(
                        (n, proc(t))
                        for n, proc, t in zip(_JSON_FIELDS, json_procs, texts, strict=True)
                    )
                    doc["occurred_at"] = when
                    data = canonical(doc)
                actual, consistent = _hashed(data, stored)
                yield seq, doc["id"], actual, consistent, micros_at
    finally:
        cursor.close()
