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

Where the parts live: keys.py loads and makes the Ed25519 keys; checkpoints.py
is the checkpoint format (leaves, Merkle root, signing, the chain) and
documents the hashes; verify_rows.py reads the entries fast from each driver;
verify_ranges.py checks one seq range of them; verify_parallel.py shares the
ranges with helper processes. This module keeps what callers use: seal(),
verify() with its Report and Problem, and the Sealer thread, and re-exports
the names of the others that code imports from here.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.engine import Connection

from whodid.entry.fields import iso, utc
from whodid.errors import ConfigurationError
from whodid.integrity.checkpoints import (
    GENESIS,
    LEAF,
    Checkpoint,
    iter_leaves,
    latest_checkpoint,
    leaf_bytes,
    make_checkpoint,
    merkle_root,
)
from whodid.integrity.keys import (
    generate_key_pair,
    key_id,
    key_ring,
    load_private_key,
    load_public_key,
)
from whodid.integrity.parallel import (
    MAX_WORKERS,
    PARALLEL_MIN,
    _check_shared,
    _plan,
    _shareable,
    _Tally,
)
from whodid.integrity.ranges import Problem, _check_range, _Promises

# Read by the tests, which compare the fast and the SQLAlchemy readers.
from whodid.integrity.rows import _entry_rows as _entry_rows
from whodid.integrity.rows import _generic_rows as _generic_rows
from whodid.store.schema import checkpoints, entries

__all__ = [
    "DEFAULT_GRACE",
    "GENESIS",
    "LEAF",
    "MAX_GAP",
    "MAX_WORKERS",
    "PARALLEL_MIN",
    "Checkpoint",
    "Problem",
    "Report",
    "Sealer",
    "generate_key_pair",
    "iter_leaves",
    "key_id",
    "latest_checkpoint",
    "leaf_bytes",
    "load_private_key",
    "load_public_key",
    "make_checkpoint",
    "merkle_root",
    "seal",
    "verify",
]

DEFAULT_GRACE = dt.timedelta(hours=1)
MAX_GAP = 10_000


# -- sealing ------------------------------------------------------------------


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


def _verify_chain(
    chain: Sequence[Checkpoint], keys: Mapping[str, Ed25519PublicKey], report: Report
) -> None:
    named = ", ".join(sorted(keys))
    prev_hash = GENESIS
    bad_keys = 0
    for number, cp in enumerate(chain, start=1):
        # A checkpoint names its key; with one key given, that key is tried anyway
        # so a wrong key is reported as such.
        public = keys.get(cp.key_id) or (next(iter(keys.values())) if len(keys) == 1 else None)
        try:
            if public is None:
                raise ValueError(cp.key_id)
            public.verify(base64.b64decode(cp.signature), cp.payload.encode())
            signed = json.loads(cp.payload)
        except (InvalidSignature, ValueError):
            bad_keys += cp.key_id not in keys
            report.problems.append(
                Problem(
                    "bad_signature",
                    f"checkpoint {cp.number}: signature does not verify with key {named}"
                    + (f" (it names key {cp.key_id})" if cp.key_id not in keys else ""),
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
                f"no checkpoint verifies with key {named}: is this the public "
                "key of the signing key?",
            ),
        )


_SEQ_LEAF = struct.Struct(">Q40s")  # seq, then the leaf's time and digest as stored


def verify(
    conn: Connection,
    public: Ed25519PublicKey | Iterable[Ed25519PublicKey],
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
    keys = key_ring(public)
    _verify_chain(chain, keys, report)
    if head is not None:
        _verify_head(chain, head, keys, report)

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
    chain: Sequence[Checkpoint],
    head: dict[str, Any],
    keys: Mapping[str, Ed25519PublicKey],
    report: Report,
) -> None:
    try:
        public = keys.get(head.get("key_id", "")) or next(iter(keys.values()))
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
                logging.getLogger("whodid.integrity.verify").exception("background seal failed")

    def stop(self, timeout: float | None = 10) -> None:
        self._stop.set()
        self._thread.join(timeout)
