"""Checking the entries of one seq range against what the checkpoints sealed.

_check_range() is the unit of work of verify: integrity.verify() runs it over
the whole log, or over seq ranges shared with helper processes
(verify_parallel.py), and merges the _Part each returns. It lives apart from
both because both need it: integrity imports verify_parallel, whose helper
processes run this without importing integrity. Problem is here because a
range check is what finds most of them (a helper sends them back pickled);
integrity re-exports it with Report.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from whodid.integrity.rows import _entry_rows

_MICROS = struct.Struct(">q")


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
    pack_micros = _MICROS.pack
    mismatched = part.mismatched
    seen = sealed = unsealed = last = 0
    for seq, entry_id, actual, self_consistent, micros in _entry_rows(conn, lo, stop, batch):
        seen += 1
        if tick is not None and seen % 1000 == 0:
            tick(1000)
        last = seq
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
            if self_consistent and pack_micros(micros) + actual != promised:
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
