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
import datetime as dt
import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.engine import Connection

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


def verify(
    conn: Connection,
    public: Ed25519PublicKey,
    head: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    batch: int = 5000,
) -> Report:
    """Check every entry and checkpoint; see the module docstring for what is covered."""
    report = Report()
    chain = [
        Checkpoint.from_row(r)
        for r in conn.execute(sa.select(checkpoints).order_by(checkpoints.c.number)).mappings()
    ]
    report.checkpoints = len(chain)
    _verify_chain(chain, public, report)
    if head is not None:
        _verify_head(chain, head, public, report)

    # What the checkpoints promise: seq -> (time µs, digest, checkpoint), and
    # which seqs were signed away by a purge.
    expected: dict[int, tuple[int, bytes, int]] = {}
    purged: set[int] = set()
    for cp in chain:
        for seq, micros, digest in iter_leaves(cp.leaves):
            if cp.kind == "purge":
                purged.add(seq)
            else:
                expected[seq] = (micros, digest, cp.number)
        if cp.kind == "purge":
            report.purged_ranges.append({**cp.info, "count": cp.count, "checkpoint": cp.number})
    for seq in purged:
        expected.pop(seq, None)
    last = chain[-1] if chain else None
    last_seal = next((cp for cp in reversed(chain) if cp.kind == "seal"), None)
    hi = last.hi if last else 0
    pending = {int(s) for s in (last_seal.pending if last_seal else {})}

    mismatched: list[tuple[int, str, bytes, bytes]] = []  # seq, id, actual, expected
    max_present = 0
    c = entries.c
    # Plain tuples in a fixed column order: RowMapping look-ups cost more than
    # the hashing itself at a million rows.
    names = (*CONTENT_FIELDS, "seq", "digest")
    result = conn.execution_options(stream_results=True, yield_per=batch).execute(
        sa.select(*(c[n] for n in names)).order_by(c.seq)
    )
    sha256 = hashlib.sha256
    seen = 0
    for values in result:
        row = dict(zip(names, values, strict=True))
        seen += 1
        if progress is not None and seen % 1000 == 0:
            progress(1000)
        seq = row["seq"]
        max_present = seq
        actual = sha256(canonical(row)).hexdigest()
        self_consistent = actual == row["digest"]
        if not self_consistent:
            report.problems.append(
                Problem(
                    "edited",
                    f"entry {row['id']} (seq {seq}) does not match its own digest: "
                    "its content was changed",
                    (row["id"],),
                    (seq,),
                )
            )
        promised = expected.pop(seq, None)
        if promised is not None:
            report.sealed += 1
            leaf = leaf_bytes(seq, row["occurred_at"], actual)
            if self_consistent and leaf[8:] != LEAF.pack(0, *promised[:2])[8:]:
                mismatched.append((seq, row["id"], leaf[16:], promised[1]))
        elif seq in purged:
            report.problems.append(
                Problem(
                    "inserted",
                    f"entry {row['id']} (seq {seq}) was purged and is back",
                    (row["id"],),
                    (seq,),
                )
            )
        elif seq > hi or seq in pending:
            report.unsealed += 1
        else:
            report.problems.append(
                Problem(
                    "inserted",
                    f"entry {row['id']} (seq {seq}) is in a sealed range but no "
                    "checkpoint covers it",
                    (row["id"],),
                    (seq,),
                )
            )
    if progress is not None:
        progress(seen % 1000)
    report.entries = seen
    report.purged = len(purged)
    _classify_mismatches(mismatched, report)
    if expected:
        seqs = tuple(sorted(expected))
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
