"""Proof bundles: an export that proves itself to someone holding only the public key.

A bundle (JSON, ``FORMAT``) travels beside a CSV or NDJSON export:

- ``export``: the export file's name, format and SHA-256;
- ``checkpoints``: every signed checkpoint the proofs rest on (number, the
  signed payload, its Ed25519 signature, the key id);
- ``entries``: one per row of the export, in its order: the row number (1 for
  the first row after a CSV header), the entry's seq, its canonical form (the
  bytes its digest covers; CSV alone is lossy: None and "" look alike, and
  neutralised formula cells change text) and its inclusion proof
  (``checkpoint``, ``leaf``, ``index``, ``size``, ``path``: see proofs.py), or
  ``null`` when it is not sealed yet;
- ``unproven``: the rows without a proof, and why.

:func:`check` verifies a bundle against the export file and a set of public
keys, offline: each checkpoint's signature, each row equal to its entry's
canonical form, each canonical form hashed into its leaf, each leaf into the
signed root. docs/integrity.md has the format with a standalone checker.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from collections.abc import Iterable, Mapping
from typing import Any

from whodid.entry.cells import FORMULA_START, guard_lines
from whodid.entry.fields import COLUMNS, CONTENT_FIELDS, JSON_COLUMNS, canonical
from whodid.integrity.checkpoints import LEAF, Checkpoint
from whodid.integrity.proofs import proof_of, root_from_path, signed_checkpoint

FORMAT = "whodid-proof-bundle/1"


def make(
    rows: Iterable[Mapping[str, Any]],
    checkpoints: Iterable[Checkpoint],
    export: Mapping[str, Any],
    why_unsealed: str,
) -> dict[str, Any]:
    """The bundle of ``rows`` (the exported entries, in the export's order).

    Args:
        rows: entry rows as stored (every field, seq and digest included).
        checkpoints: the log's checkpoints, oldest first.
        export: ``{"file", "format", "sha256"}`` of the export file.
        why_unsealed: what the bundle says of entries no seal covers yet.
    """
    seals = [cp for cp in checkpoints if cp.kind == "seal"]
    where: dict[int, Checkpoint] = {}
    for cp in seals:
        for seq, _, _ in LEAF.iter_unpack(cp.leaves):
            where[seq] = cp
    used: dict[int, Checkpoint] = {}
    entries, unproven = [], []
    for number, row in enumerate(rows, start=1):
        seq = int(row["seq"])
        holder = where.get(seq)
        proof = None if holder is None else proof_of(holder, seq)
        if holder is None or proof is None:
            unproven.append({"row": number, "seq": seq, "why": why_unsealed})
        else:
            used[holder.number] = holder
        entries.append(
            {
                "row": number,
                "seq": seq,
                "canonical": canonical(row).decode("utf-8"),
                "proof": proof,
            }
        )
    return {
        "format": FORMAT,
        "export": dict(export),
        "checkpoints": [signed_checkpoint(used[n]) for n in sorted(used)],
        "entries": entries,
        "unproven": unproven,
    }


# -- checking -------------------------------------------------------------------


def check(bundle: Mapping[str, Any], export: bytes, public_keys: Mapping[str, Any]) -> list[str]:
    """What is wrong with ``bundle`` for ``export``; an empty list if it all holds.

    ``public_keys`` maps key ids (``whodid.integrity.keys.key_id``) to Ed25519
    public keys; a checkpoint signed by a key not among them does not count.
    """
    from cryptography.exceptions import InvalidSignature

    problems: list[str] = []
    if bundle.get("format") != FORMAT:
        return [f"not a {FORMAT} bundle"]
    meta = bundle.get("export", {})
    if hashlib.sha256(export).hexdigest() != meta.get("sha256"):
        problems.append("the export file is not the one the bundle was made for (SHA-256 differs)")
    roots: dict[int, str] = {}
    for cp in bundle.get("checkpoints", []):
        key = public_keys.get(cp.get("key_id"))
        if key is None:
            problems.append(f"checkpoint {cp.get('number')}: signed by an unknown key")
            continue
        try:
            key.verify(base64.b64decode(cp["signature"]), cp["payload"].encode())
        except (InvalidSignature, ValueError, KeyError, TypeError):
            problems.append(f"checkpoint {cp.get('number')}: bad signature")
            continue
        payload = json.loads(cp["payload"])
        if payload.get("number") != cp.get("number") or payload.get("kind") != "seal":
            problems.append(f"checkpoint {cp.get('number')}: payload names another checkpoint")
            continue
        roots[int(payload["number"])] = str(payload["root"])

    rows = _rows(export, str(meta.get("format")))
    entries = list(bundle.get("entries", []))
    if len(rows) != len(entries):
        problems.append(f"the export has {len(rows)} rows, the bundle {len(entries)} entries")
    seen: dict[int, int] = {}
    for number, (row, entry) in enumerate(zip(rows, entries, strict=False), start=1):
        problems += _check_entry(number, row, entry, roots, str(meta.get("format")), seen)
    for entry in entries[len(rows) :]:
        problems.append(f"row {entry.get('row')}: in the bundle, missing from the export")
    for number in range(len(entries) + 1, len(rows) + 1):
        problems.append(f"row {number}: in the export, not in the bundle")
    return problems


def _rows(export: bytes, format: str) -> list[Any]:
    text = export.decode("utf-8")
    if format == "ndjson":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header != list(COLUMNS):
        return []
    return [dict(zip(COLUMNS, cells, strict=False)) for cells in reader]


def _check_entry(
    number: int,
    row: Mapping[str, Any],
    entry: Mapping[str, Any],
    roots: Mapping[int, str],
    format: str,
    seen: dict[int, int],
) -> list[str]:
    where = f"row {number}"
    text = str(entry.get("canonical", ""))
    try:
        doc = json.loads(text)
    except ValueError:
        return [f"{where}: the bundle's canonical form is not JSON"]
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    problems = []
    seq = entry.get("seq")
    if isinstance(seq, int):
        if seq in seen:
            problems.append(f"{where}: repeats the entry of row {seen[seq]} (seq {seq})")
        seen[seq] = number
    if str(row.get("digest")) != digest or str(row.get("seq")) != str(seq):
        problems.append(f"{where}: its digest or seq is not its entry's")
    if not _same_row(row, doc, format):
        problems.append(f"{where}: differs from its entry's canonical form")
    proof = entry.get("proof")
    if proof is None:
        return problems
    leaf = bytes.fromhex(str(proof.get("leaf", "")))
    if len(leaf) != LEAF.size:
        return [*problems, f"{where}: malformed proof"]
    leaf_seq, _, leaf_digest = LEAF.unpack(leaf)
    if leaf_seq != seq or leaf_digest.hex() != digest:
        problems.append(f"{where}: its proof is for another entry")
    root = roots.get(int(proof.get("checkpoint", -1)))
    if root is None:
        problems.append(f"{where}: rests on checkpoint {proof.get('checkpoint')}, not verified")
    elif root_from_path(leaf, list(proof.get("path", []))) != root:
        problems.append(f"{where}: not in the signed log (its path leads to another root)")
    return problems


def _same_row(row: Mapping[str, Any], doc: Mapping[str, Any], format: str) -> bool:
    if format == "ndjson":
        return all(row.get(name) == doc.get(name) for name in CONTENT_FIELDS)
    for name in CONTENT_FIELDS:
        cell = str(row.get(name))
        if name in JSON_COLUMNS:
            try:
                if (json.loads(cell) if cell else None) != doc.get(name):
                    return False
            except ValueError:
                return False
        elif cell != csv_cell(name, doc.get(name)):
            return False
    return True


def csv_cell(name: str, value: Any) -> str:
    """How the CSV export writes scalar ``value`` of field ``name`` (entry/cells.py)."""
    if value is None:
        return ""
    if name == "passkey":
        return "true" if value else "false"
    text = str(value)
    if "\r" in text or "\n" in text:
        text = guard_lines(text)
    if text and text[0] in FORMULA_START:
        text = "'" + text
    return text
