"""Signed checkpoints: the leaves of sealed entries, their Merkle root, the chain.

A checkpoint signs, with Ed25519, the leaves (seq, time, digest) of the entries
it covers, their Merkle root and the hash of the previous checkpoint
(``prev_hash``). This module is the format: how leaves and roots are computed,
how a checkpoint is signed and stored, and reading the latest one. What goes
into a seal is integrity.seal(); a purge's checkpoint is retention.py's; both
write through make_checkpoint(), and verify reads the chain back.

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
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Connection

from whodid.entry.fields import iso, utc
from whodid.integrity.keys import key_id
from whodid.store.schema import checkpoints

GENESIS = "0" * 64
LEAF = struct.Struct(">Qq32s")  # seq, occurred_at in µs, digest
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


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


def all_checkpoints(conn: Connection) -> list[Checkpoint]:
    """Every checkpoint, oldest first."""
    rows = conn.execute(sa.select(checkpoints).order_by(checkpoints.c.number)).mappings()
    return [Checkpoint.from_row(r) for r in rows]
