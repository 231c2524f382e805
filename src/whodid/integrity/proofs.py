"""Inclusion proofs: that one entry is in the signed log, checkable with the public key alone.

The tree is the checkpoints' (see checkpoints.py): leaf hash
``SHA-256(0x00 || seq (8 bytes) || occurred_at µs (8 bytes, signed) || digest)``,
node hash ``SHA-256(0x01 || left || right)``, an odd node at the end of a level
promoted unchanged. An inclusion proof is the leaf's index, the tree's size and
the sibling hashes from the leaf up, each marked with the side it sits on; the
root it leads to must be the root a signed checkpoint names.
"""

from __future__ import annotations

import hashlib
from typing import Any

from whodid.integrity.checkpoints import LEAF, Checkpoint


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def audit_path(leaves: bytes, index: int) -> list[dict[str, str]]:
    """The sibling hashes from leaf ``index`` up to the root of ``leaves``."""
    level = [leaf_hash(leaves[i : i + LEAF.size]) for i in range(0, len(leaves), LEAF.size)]
    if not 0 <= index < len(level):
        raise IndexError(f"leaf {index} is not in a tree of {len(level)}")
    path = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            side = "left" if sibling < index else "right"
            path.append({"side": side, "hash": level[sibling].hex()})
        # else: the odd node at the end is promoted, nothing to combine with
        nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level, index = nxt, index // 2
    return path


def root_from_path(leaf: bytes, path: list[dict[str, Any]]) -> str:
    """The root that ``leaf`` and its audit ``path`` lead to (hex)."""
    node = leaf_hash(leaf)
    for step in path:
        sibling = bytes.fromhex(str(step["hash"]))
        node = _node(sibling, node) if step["side"] == "left" else _node(node, sibling)
    return node.hex()


def find_leaf(checkpoint: Checkpoint, seq: int) -> tuple[int, bytes] | None:
    """The index and bytes of ``seq``'s leaf in ``checkpoint``, if it holds one."""
    for index, (leaf_seq, _, _) in enumerate(LEAF.iter_unpack(checkpoint.leaves)):
        if leaf_seq == seq:
            at = index * LEAF.size
            return index, checkpoint.leaves[at : at + LEAF.size]
    return None


def proof_of(checkpoint: Checkpoint, seq: int) -> dict[str, Any] | None:
    """``seq``'s inclusion proof under ``checkpoint`` (None if it holds no such leaf)."""
    found = find_leaf(checkpoint, seq)
    if found is None:
        return None
    index, leaf = found
    return {
        "checkpoint": checkpoint.number,
        "leaf": leaf.hex(),
        "index": index,
        "size": checkpoint.count,
        "path": audit_path(checkpoint.leaves, index),
    }


def signed_checkpoint(checkpoint: Checkpoint) -> dict[str, Any]:
    """What a verifier needs of a checkpoint: the signed payload, its signature, its key."""
    return {
        "number": checkpoint.number,
        "payload": checkpoint.payload,
        "signature": checkpoint.signature,
        "key_id": checkpoint.key_id,
    }
