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
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from whodid.entry.cells import FORMULA_START, guard_lines
from whodid.entry.fields import COLUMNS, CONTENT_FIELDS, JSON_COLUMNS, canonical, canonical_json
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


def check(bundle: Any, export: bytes, public_keys: Mapping[str, Any]) -> list[str]:
    """What is wrong with ``bundle`` for ``export``; an empty list if it all holds.

    ``public_keys`` maps key ids (``whodid.integrity.keys.key_id``) to Ed25519
    public keys; a checkpoint signed by a key not among them does not count.
    Never raises on malformed input: what cannot be read is a problem too.
    """
    try:
        return _check(bundle, export, public_keys)
    except (ValueError, TypeError, KeyError, AttributeError, csv.Error) as exc:
        return [f"the bundle or the export cannot be read: {type(exc).__name__}: {exc}"]


def _check(bundle: Any, export: bytes, public_keys: Mapping[str, Any]) -> list[str]:
    from cryptography.exceptions import InvalidSignature

    problems: list[str] = []
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        return [f"not a {FORMAT} bundle"]
    meta = bundle.get("export") or {}
    if hashlib.sha256(export).hexdigest() != meta.get("sha256"):
        problems.append("the export file is not the one the bundle was made for (SHA-256 differs)")
    roots: dict[int, str] = {}
    covered: dict[int, set[int]] = {}  # checkpoint -> seqs up to its hi it did not cover
    highest = 0
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
        if int(payload["hi"]) > highest:
            highest = int(payload["hi"])
            pending = (payload.get("info") or {}).get("pending") or {}
            covered = {0: {int(seq) for seq in pending}}

    format = str(meta.get("format"))
    rows = _rows(export, format)
    entries = list(bundle.get("entries", []))
    if len(rows) != len(entries):
        problems.append(f"the export has {len(rows)} rows, the bundle {len(entries)} entries")
    unproven = {u.get("row") for u in bundle.get("unproven", []) if isinstance(u, dict)}
    seen: dict[int, int] = {}
    previous: tuple[str, int] | None = None
    for number, (row, entry) in enumerate(zip(rows, entries, strict=False), start=1):
        problems += _check_entry(number, row, entry, roots, format, seen)
        if entry.get("row") != number:
            problems.append(f"row {number}: the bundle's entry says row {entry.get('row')}")
        seq = entry.get("seq")
        if entry.get("proof") is None and type(seq) is int:
            if number not in unproven:
                problems.append(f"row {number}: no proof, and not listed as unproven")
            if seq <= highest and seq not in covered.get(0, set()):
                problems.append(
                    f"row {number}: no proof, though a verified checkpoint covers seq {seq}"
                )
        order = (str(row.get("occurred_at")), seq if type(seq) is int else -1)
        if previous is not None and order < previous:
            problems.append(f"row {number}: out of order (the export is oldest first)")
        previous = order
    for entry in entries[len(rows) :]:
        problems.append(f"row {entry.get('row')}: in the bundle, missing from the export")
    for number in range(len(entries) + 1, len(rows) + 1):
        problems.append(f"row {number}: in the export, not in the bundle")
    return problems


def _rows(export: bytes, format: str) -> list[Any]:
    text = export.decode("utf-8")
    if format == "ndjson":
        # "\n" only: str.splitlines() would also split at U+2028 inside a value.
        return [json.loads(line) for line in text.split("\n") if line.strip()]
    previous = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize)  # a long before/after value is a long cell
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if header != list(COLUMNS):
            raise ValueError("the CSV header is not whodid's columns")
        return [
            dict(zip(COLUMNS, cells, strict=True)) if len(cells) == len(COLUMNS) else {"": cells}
            for cells in reader
        ]
    finally:
        csv.field_size_limit(previous)


def _check_entry(
    number: int,
    row: Mapping[str, Any],
    entry: Mapping[str, Any],
    roots: Mapping[int, str],
    format: str,
    seen: dict[int, int],
) -> list[str]:
    where = f"row {number}"
    if "" in row:
        return [f"{where}: has {len(row[''])} cells, not {len(COLUMNS)}"]
    text = str(entry.get("canonical", ""))
    try:
        doc = json.loads(text)
    except ValueError:
        return [f"{where}: the bundle's canonical form is not JSON"]
    if not isinstance(doc, dict):
        return [f"{where}: the bundle's canonical form is not an entry"]
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    problems = []
    seq = entry.get("seq")
    if type(seq) is not int:
        return [f"{where}: the bundle's seq is not a whole number"]
    if seq in seen:
        problems.append(f"{where}: repeats the entry of row {seen[seq]} (seq {seq})")
    seen[seq] = number
    if str(row.get("digest")) != digest or not _same_seq(row.get("seq"), seq, format):
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


def _same_seq(cell: Any, seq: int, format: str) -> bool:
    if format == "ndjson":
        return type(cell) is int and cell == seq
    return bool(cell == str(seq))


def _same_row(row: Mapping[str, Any], doc: Mapping[str, Any], format: str) -> bool:
    if format == "ndjson":
        # Exactly whodid's fields, compared as canonical text: 0 is not false.
        if set(row) != set(COLUMNS):
            return False
        content = {name: row[name] for name in CONTENT_FIELDS}
        return canonical_json(content) == canonical_json(dict(doc))
    for name in CONTENT_FIELDS:
        cell = str(row.get(name))
        if name in JSON_COLUMNS:
            try:
                value = json.loads(cell) if cell else None
            except ValueError:
                return False
            if canonical_json(value) != canonical_json(doc.get(name)):
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
