"""Tamper evidence: signed checkpoints over the log, and the verifier.

Every entry carries a digest of its content (see entry.py). ``seal()`` writes a
checkpoint covering the entries not sealed yet: their leaves (seq, time,
digest), the Merkle root over them, the chain link to the previous checkpoint
(``prev_hash``), all signed with Ed25519. The private key stays outside the
database; the public key is all a verifier needs.

Concurrent writers never wait for sealing. On PostgreSQL an entry's seq is
drawn when it is inserted, so a transaction can commit *after* a seal that
already covered higher seqs. A seal therefore records the seqs below its
high-water mark that were missing when it ran (``pending``); the next seal
picks up those that have appeared since. A pending seq still missing after
``grace`` is a rolled-back transaction and is dropped.

Leaf hash: ``SHA-256(0x00 || seq (8 bytes, big-endian) || occurred_at (8 bytes,
microseconds since the epoch, big-endian, signed) || digest (32 bytes))``;
node hash: ``SHA-256(0x01 || left || right)``; an odd node at the end of a
level is promoted unchanged. Payload: canonical JSON (sorted keys, no spaces)
of number, kind, created_at, hi, count, root, pending, prev_hash, key_id.
"""

from __future__ import annotations

import base64
import bisect
import collections
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from whodid import fastjson
from whodid.entry import CONTENT_FIELDS, canonical, iso, utc
from whodid.errors import ConfigurationError
from whodid.schema import checkpoints, entries

GENESIS = "0" * 64
LEAF = struct.Struct(">Qq32s")  # seq, occurred_at in µs, digest
DEFAULT_GRACE = dt.timedelta(hours=1)
MAX_GAP = 10_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# -- keys ---------------------------------------------------------------------


def load_private_key(key: Any) -> Ed25519PrivateKey:
    """An Ed25519 private key from a key object, PEM bytes/text, or a PEM file path."""
    if isinstance(key, Ed25519PrivateKey):
        return key
    pem = _pem(key, "signing_key")
    try:
        loaded = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"signing_key is not an unencrypted PEM private key ({exc}); "
            "create one with `whodid keygen`"
        ) from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ConfigurationError(
            "signing_key must be an Ed25519 key; create one with `whodid keygen`"
        )
    return loaded


def load_public_key(key: Any) -> Ed25519PublicKey:
    """An Ed25519 public key from a key object (public or private), PEM, or a path."""
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, Ed25519PrivateKey):
        return key.public_key()
    pem = _pem(key, "public_key")
    try:
        loaded: Any = serialization.load_pem_public_key(pem)
    except ValueError:
        return load_private_key(pem).public_key()
    if not isinstance(loaded, Ed25519PublicKey):
        raise ConfigurationError("public_key must be an Ed25519 key")
    return loaded


def _pem(key: Any, name: str) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str) and key.lstrip().startswith("-----BEGIN"):
        return key.encode()
    if isinstance(key, str | os.PathLike):
        path = Path(key)
        if not path.is_file():
            raise ConfigurationError(
                f"{name} file {str(path)!r} does not exist; create a key pair with `whodid keygen`"
            )
        return path.read_bytes()
    raise ConfigurationError(f"{name} must be a key object, PEM bytes or a file path, got {key!r}")


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key_pair(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a new private key to ``path`` (mode 0600) and its public half to ``path.pub``."""
    private = Ed25519PrivateKey.generate()
    target = Path(path)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = target.with_name(target.name + ".pub")
    public.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return target, public


# -- Merkle tree --------------------------------------------------------------


def leaf_bytes(seq: int, occurred_at: dt.datetime, digest_hex: str) -> bytes:
    micros = (utc(occurred_at) - _EPOCH) // dt.timedelta(microseconds=1)
    return LEAF.pack(seq, micros, bytes.fromhex(digest_hex))


def merkle_root(leaves: bytes) -> str:
    sha = hashlib.sha256
    level = [
        sha(b"\x00" + leaves[i : i + LEAF.size]).digest() for i in range(0, len(leaves), LEAF.size)
    ]
    if not level:
        return sha(b"").hexdigest()
    while len(level) > 1:
        nxt = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


def iter_leaves(leaves: bytes) -> Iterator[tuple[int, int, bytes]]:
    return LEAF.iter_unpack(leaves)


# -- checkpoints --------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    number: int
    kind: str  # "seal" or "purge"
    created_at: dt.datetime
    hi: int
    count: int
    root: str
    leaves: bytes
    info: dict[str, Any]
    prev_hash: str
    payload: str
    signature: str
    key_id: str

    @property
    def pending(self) -> dict[str, str]:
        """Seqs below ``hi`` missing when this seal ran, with when first missed."""
        return dict(self.info.get("pending", {})) if self.kind == "seal" else {}

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.payload.encode()).hexdigest()

    @classmethod
    def from_row(cls, row: Any) -> Checkpoint:
        data = dict(row)
        data["created_at"] = utc(data["created_at"])
        data["leaves"] = bytes(data["leaves"])
        return cls(**data)

    def head(self) -> dict[str, Any]:
        """The signed head: what to keep outside the database to detect truncation."""
        return {
            "number": self.number,
            "hash": self.hash,
            "payload": self.payload,
            "signature": self.signature,
            "key_id": self.key_id,
        }


def _payload(fields: dict[str, Any]) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def make_checkpoint(
    conn: Connection,
    private: Ed25519PrivateKey,
    kind: str,
    leaves: bytes,
    hi: int,
    info: dict[str, Any],
    previous: Checkpoint | None,
) -> Checkpoint:
    # Whole microseconds, so the stored time and the signed text agree exactly.
    created_at = dt.datetime.now(dt.UTC)
    fields: dict[str, Any] = {
        "number": (previous.number + 1) if previous else 1,
        "kind": kind,
        "created_at": iso(created_at),
        "hi": hi,
        "count": len(leaves) // LEAF.size,
        "root": merkle_root(leaves),
        "info": info,
        "prev_hash": previous.hash if previous else GENESIS,
        "key_id": key_id(private.public_key()),
    }
    payload = _payload(fields)
    signature = base64.b64encode(private.sign(payload.encode())).decode()
    row = {
        **fields,
        "created_at": created_at,
        "leaves": leaves,
        "payload": payload,
        "signature": signature,
    }
    # number is the primary key: two seals racing for the same number cannot
    # both commit, so the chain never forks.
    conn.execute(checkpoints.insert().values(**row))
    return Checkpoint.from_row(row)


def latest_checkpoint(conn: Connection) -> Checkpoint | None:
    row = (
        conn.execute(sa.select(checkpoints).order_by(checkpoints.c.number.desc()).limit(1))
        .mappings()
        .first()
    )
    return Checkpoint.from_row(row) if row else None


def seal(
    conn: Connection, private: Ed25519PrivateKey, grace: dt.timedelta = DEFAULT_GRACE
) -> Checkpoint | None:
    """Sign a checkpoint over every entry not sealed yet; None if there is none."""
    previous = latest_checkpoint(conn)
    prev_hi = previous.hi if previous else 0
    prev_pending = {int(k): v for k, v in (previous.pending if previous else {}).items()}
    c = entries.c
    cond = c.seq > prev_hi
    if prev_pending:
        cond = sa.or_(cond, c.seq.in_(sorted(prev_pending)))
    rows = conn.execute(sa.select(c.seq, c.occurred_at, c.digest).where(cond).order_by(c.seq)).all()
    now = dt.datetime.now(dt.UTC)
    found = {r.seq for r in rows}
    hi = max([prev_hi, *found])
    pending: dict[str, str] = {}
    for seq, since in prev_pending.items():
        if (
            seq not in found
            and now - utc(dt.datetime.fromisoformat(since.replace("Z", "+00:00"))) < grace
        ):
            pending[str(seq)] = since
    present_above = sorted(s for s in found if s > prev_hi)
    expected = prev_hi + 1
    for seq in present_above:
        # A jump of thousands is a sequence cache or restart, not open transactions.
        for gap in range(max(expected, seq - MAX_GAP), seq):
            pending[str(gap)] = iso(now)
        expected = seq + 1
    if not rows and pending == (previous.pending if previous else {}):
        return None
    leaves = b"".join(leaf_bytes(r.seq, r.occurred_at, r.digest) for r in rows)
    return make_checkpoint(conn, private, "seal", leaves, hi, {"pending": pending}, previous)


# -- verification -------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    kind: str  # edited, deleted, inserted, reordered, truncated, bad_signature, wrong_key, ...
    message: str
    entry_ids: tuple[str, ...] = ()
    seqs: tuple[int, ...] = ()
    checkpoint: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "entry_ids": list(self.entry_ids),
            "seqs": list(self.seqs),
            "checkpoint": self.checkpoint,
        }


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    entries: int = 0
    checkpoints: int = 0
    sealed: int = 0
    unsealed: int = 0
    purged: int = 0
    purged_ranges: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "sealed": self.sealed,
            "unsealed": self.unsealed,
            "purged": self.purged,
            "purged_ranges": self.purged_ranges,
            "problems": [p.as_dict() for p in self.problems],
        }


def _verify_chain(chain: Sequence[Checkpoint], public: Ed25519PublicKey, report: Report) -> None:
    expected_key = key_id(public)
    prev_hash = GENESIS
    bad_keys = 0
    for number, cp in enumerate(chain, start=1):
        try:
            public.verify(base64.b64decode(cp.signature), cp.payload.encode())
            signed = json.loads(cp.payload)
        except (InvalidSignature, ValueError):
            bad_keys += cp.key_id != expected_key
            report.problems.append(
                Problem(
                    "bad_signature",
                    f"checkpoint {cp.number}: signature does not verify with key {expected_key}"
                    + (f" (it names key {cp.key_id})" if cp.key_id != expected_key else ""),
                    checkpoint=cp.number,
                )
            )
            continue
        columns = {
            "number": cp.number,
            "kind": cp.kind,
            "created_at": iso(cp.created_at),
            "hi": cp.hi,
            "count": cp.count,
            "root": cp.root,
            "info": cp.info,
            "prev_hash": cp.prev_hash,
            "key_id": cp.key_id,
        }
        if signed != columns:
            report.problems.append(
                Problem(
                    "forged_checkpoint",
                    f"checkpoint {cp.number}: stored fields differ from the signed payload",
                    checkpoint=cp.number,
                )
            )
        if cp.number != number or cp.prev_hash != prev_hash:
            report.problems.append(
                Problem(
                    "broken_chain",
                    f"checkpoint {cp.number} does not follow checkpoint "
                    f"{number - 1}: a checkpoint was removed or inserted",
                    checkpoint=cp.number,
                )
            )
        if merkle_root(cp.leaves) != cp.root or len(cp.leaves) // LEAF.size != cp.count:
            report.problems.append(
                Problem(
                    "forged_checkpoint",
                    f"checkpoint {cp.number}: its leaves do not match its signed Merkle root",
                    checkpoint=cp.number,
                )
            )
        prev_hash = cp.hash
    if chain and bad_keys == len(chain):
        report.problems.insert(
            0,
            Problem(
                "wrong_key",
                f"no checkpoint verifies with key {expected_key}: is this the public "
                "key of the signing key?",
            ),
        )


#: Logs spanning fewer seqs than this are verified by this process alone;
#: larger ones in seq ranges shared with helper processes (see verify()).
PARALLEL_MIN = 200_000
#: At most this many processes verify one log unless ``workers`` asks for more.
MAX_WORKERS = 4
_RANGES_PER_WORKER = 8

_SEQ_LEAF = struct.Struct(">Q40s")  # seq, then the leaf's time and digest as stored
_MICROS = struct.Struct(">q")
_US = dt.timedelta(microseconds=1)
_NAIVE_EPOCH = dt.datetime(1970, 1, 1)
_JSON_FIELDS = ("client", "metadata", "before", "after")
_SCALAR_FIELDS = tuple(n for n in CONTENT_FIELDS if n != "occurred_at" and n not in _JSON_FIELDS)
_TEXT_OR_NULL = frozenset({str, type(None)})
_cursor_names = itertools.count()

#: (seq, entry id, canonical bytes, stored digest, occurred_at in µs) of one entry.
_EntryRow = tuple[int, str, bytes, str, int]


@dataclass(frozen=True)
class _Promises:
    """What the checkpoints say about seqs that have no sealed leaf."""

    hi: int
    purged: frozenset[int]
    pending: frozenset[int]


@dataclass
class _Part:
    """What checking one seq range found, in seq order."""

    problems: list[Problem] = field(default_factory=list)
    mismatched: list[tuple[int, str, bytes, bytes]] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)  # sealed seqs of the range not present
    seen: int = 0
    sealed: int = 0
    unsealed: int = 0
    last: int = 0  # highest seq present


def verify(
    conn: Connection,
    public: Ed25519PublicKey,
    head: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    batch: int = 5000,
    workers: int | None = None,
) -> Report:
    """Check every entry and checkpoint; see the module docstring for what is covered.

    A log spanning ``PARALLEL_MIN`` seqs or more is checked in seq ranges by this
    process and ``workers - 1`` helper processes, each reading through its own
    connection to the same URL; ``workers`` defaults to the CPUs this process may
    use, at most ``MAX_WORKERS``. ``workers=1``, in-memory SQLite, drivers other
    than psycopg and sqlite3, and a ``conn`` already inside a transaction (whose
    uncommitted rows other connections cannot see) keep it in this process. The
    report is the same either way.
    """
    may_share = workers != 1 and not conn.in_transaction() and _shareable(conn)
    report = Report()
    chain = [
        Checkpoint.from_row(r)
        for r in conn.execute(sa.select(checkpoints).order_by(checkpoints.c.number)).mappings()
    ]
    report.checkpoints = len(chain)
    _verify_chain(chain, public, report)
    if head is not None:
        _verify_head(chain, head, public, report)

    # What the checkpoints promise: seq -> leaf time µs and digest (the leaf's
    # last 40 bytes), and which seqs were signed away by a purge.
    expected: dict[int, bytes] = {}
    purged: set[int] = set()
    for cp in chain:
        if cp.kind == "purge":
            purged.update(seq for seq, _ in _SEQ_LEAF.iter_unpack(cp.leaves))
            report.purged_ranges.append({**cp.info, "count": cp.count, "checkpoint": cp.number})
        else:
            expected.update(_SEQ_LEAF.iter_unpack(cp.leaves))
    for seq in purged:
        expected.pop(seq, None)
    last = chain[-1] if chain else None
    last_seal = next((cp for cp in reversed(chain) if cp.kind == "seal"), None)
    promises = _Promises(
        hi=last.hi if last else 0,
        purged=frozenset(purged),
        pending=frozenset(int(s) for s in (last_seal.pending if last_seal else {})),
    )

    tally = _Tally(progress)
    plan = _plan(conn, workers) if may_share else None
    if plan is None:
        parts = [_check_range(conn, None, None, expected, promises, batch, tally.tick)]
    else:
        bounds, helpers, fingerprint = plan
        parts = _check_shared(conn, bounds, helpers, fingerprint, expected, promises, batch, tally)

    mismatched: list[tuple[int, str, bytes, bytes]] = []  # seq, id, actual, expected
    missing: list[int] = []
    max_present = 0
    for part in parts:
        report.problems.extend(part.problems)
        mismatched.extend(part.mismatched)
        missing.extend(part.missing)
        report.entries += part.seen
        report.sealed += part.sealed
        report.unsealed += part.unsealed
        if part.seen:
            max_present = part.last
    if progress is not None:
        progress(report.entries - tally.reported)
    report.purged = len(purged)
    _classify_mismatches(mismatched, report)
    if missing:
        seqs = tuple(sorted(missing))
        # Missing entries after every surviving one: the tail was cut off.
        kind = "truncated" if seqs[0] > max_present else "deleted"
        report.problems.append(
            Problem(
                kind,
                f"{len(seqs)} sealed entr{'y is' if len(seqs) == 1 else 'ies are'} missing "
                f"(seq {_ranges(seqs)})",
                (),
                seqs,
            )
        )
    return report


def _check_range(
    conn: Connection,
    lo: int | None,
    stop: int | None,
    expected: dict[int, bytes],
    promises: _Promises,
    batch: int,
    tick: Callable[[int], None] | None,
) -> _Part:
    """Check the entries with ``lo <= seq < stop`` against ``expected``, which this
    pops: what is left in it are sealed seqs of the range that are missing."""
    part = _Part()
    problems = part.problems
    hi, purged, pending = promises.hi, promises.purged, promises.pending
    sha256 = hashlib.sha256
    pack_micros = _MICROS.pack
    mismatched = part.mismatched
    seen = sealed = unsealed = last = 0
    for seq, entry_id, data, stored, micros in _entry_rows(conn, lo, stop, batch):
        seen += 1
        if tick is not None and seen % 1000 == 0:
            tick(1000)
        last = seq
        hashed = sha256(data)
        self_consistent = hashed.hexdigest() == stored
        if not self_consistent:
            problems.append(
                Problem(
                    "edited",
                    f"entry {entry_id} (seq {seq}) does not match its own digest: "
                    "its content was changed",
                    (entry_id,),
                    (seq,),
                )
            )
        promised = expected.pop(seq, None)
        if promised is not None:
            sealed += 1
            if self_consistent:
                actual = hashed.digest()
                if pack_micros(micros) + actual != promised:
                    mismatched.append((seq, entry_id, actual, promised[8:]))
        elif seq in purged:
            problems.append(
                Problem(
                    "inserted",
                    f"entry {entry_id} (seq {seq}) was purged and is back",
                    (entry_id,),
                    (seq,),
                )
            )
        elif seq > hi or seq in pending:
            unsealed += 1
        else:
            problems.append(
                Problem(
                    "inserted",
                    f"entry {entry_id} (seq {seq}) is in a sealed range but no "
                    "checkpoint covers it",
                    (entry_id,),
                    (seq,),
                )
            )
    part.seen, part.sealed, part.unsealed, part.last = seen, sealed, unsealed, last
    part.missing = list(expected)
    return part


# -- reading entries for verify -------------------------------------------------
#
# Each reader yields _EntryRow tuples whose canonical bytes are exactly
# entry.canonical() of the row as SQLAlchemy would return it. The fast readers
# take plain tuples from the DBAPI cursor, get the time as canonical text and
# epoch µs without building a datetime where they can, and encode through
# fastjson; any entry fastjson cannot vouch for goes through the row as
# SQLAlchemy would build it and canonical() itself.


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
        yield row["seq"], row["id"], canonical(row), row["digest"], _micros(row["occurred_at"])


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
        f"FROM {conn.dialect.identifier_preparer.format_table(entries)}"
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
                yield seq, doc["id"], data, stored, micros_at
    finally:
        cursor.close()


def _sqlite_rows(
    conn: Connection, lo: int | None, stop: int | None, batch: int, procs: dict[str, Any]
) -> Iterator[_EntryRow]:
    quote = conn.dialect.identifier_preparer.quote
    sql = (
        f"SELECT {', '.join(quote(n) for n in _SCALAR_FIELDS)}, {quote('occurred_at')}, "
        f"{quote('seq')}, {quote('digest')}, {', '.join(quote(n) for n in _JSON_FIELDS)} "
        f"FROM {conn.dialect.identifier_preparer.format_table(entries)}"
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
                yield seq, doc["id"], data, stored, micros_at
    finally:
        cursor.close()


# -- sharing verify between processes ---------------------------------------------


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


# The helper imports whodid.integrity without running whodid/__init__.py, which
# imports the whole library (0.5 s more of start-up on every verify).
_HELPER_BOOT = """
import importlib.util, pickle, sys, types
sys.path[:] = pickle.load(sys.stdin.buffer)
spec = importlib.util.find_spec("whodid")
package = types.ModuleType("whodid")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["whodid"] = package
from whodid.integrity import _helper_main
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
                pickle.dump(tasks[i], stdin, protocol=pickle.HIGHEST_PROTOCOL)
                stdin.flush()
                status, part = pickle.load(stdout)
                if status != "ok":
                    raise RuntimeError(part)
            except Exception as exc:
                # This process checks the range itself: a database error then
                # surfaces here, with its own type and message.
                logging.getLogger("whodid.integrity").debug("verify helper failed: %r", exc)
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


def _classify_mismatches(mismatched: list[tuple[int, str, bytes, bytes]], report: Report) -> None:
    """Tell swapped entries (content moved to another seq) from edited ones."""
    by_expected = {exp: (seq, eid) for seq, eid, _, exp in mismatched}
    for seq, eid, actual, _ in mismatched:
        other = by_expected.get(actual)
        if other is not None:
            report.problems.append(
                Problem(
                    "reordered",
                    f"entry {eid} (seq {seq}) holds what was sealed at seq {other[0]}",
                    (eid, other[1]),
                    (seq, other[0]),
                )
            )
        else:
            report.problems.append(
                Problem(
                    "edited",
                    f"entry {eid} (seq {seq}) differs from what checkpoint sealed "
                    "(its digest was recomputed to hide it)",
                    (eid,),
                    (seq,),
                )
            )


def _verify_head(
    chain: Sequence[Checkpoint], head: dict[str, Any], public: Ed25519PublicKey, report: Report
) -> None:
    try:
        public.verify(base64.b64decode(head["signature"]), head["payload"].encode())
        number = int(json.loads(head["payload"])["number"])
    except (InvalidSignature, ValueError, KeyError, TypeError):
        report.problems.append(Problem("bad_signature", "the signed head does not verify"))
        return
    if number > len(chain):
        report.problems.append(
            Problem(
                "truncated",
                f"the signed head names checkpoint {number}, the database ends at "
                f"{len(chain)}: checkpoints and the entries they sealed were removed",
                checkpoint=number,
            )
        )
    elif chain[number - 1].payload != head["payload"]:
        report.problems.append(
            Problem(
                "forged_checkpoint",
                f"checkpoint {number} differs from the signed head",
                checkpoint=number,
            )
        )


def _ranges(seqs: Sequence[int]) -> str:
    out: list[str] = []
    start = prev = seqs[0]
    for s in [*seqs[1:], None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if s is not None:
            start = prev = s
    return ", ".join(out[:20]) + (" ..." if len(out) > 20 else "")


class Sealer:
    """A daemon thread that seals every ``seconds`` until stopped."""

    def __init__(self, seal: Callable[[], Any], seconds: float) -> None:
        import threading

        if seconds <= 0:
            raise ConfigurationError("seal_every() needs a positive number of seconds")
        self._seal = seal
        self._seconds = seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="whodid-sealer", daemon=True)
        self.errors = 0

    def start(self) -> Sealer:
        self._thread.start()
        return self

    def _run(self) -> None:
        import logging

        while not self._stop.wait(self._seconds):
            try:
                self._seal()
            except Exception:  # keep sealing; a database hiccup must not end it
                self.errors += 1
                logging.getLogger("whodid.integrity").exception("background seal failed")

    def stop(self, timeout: float | None = 10) -> None:
        self._stop.set()
        self._thread.join(timeout)
