"""One audit entry: its fields, its JSON form, and its content digest.

Canonical form (what :func:`digest` hashes, so anyone can re-verify with their
own code): the entry's fields except ``seq`` and ``digest`` as one JSON
object, keys sorted, no insignificant whitespace (separators ``,`` and
``:``), non-ASCII characters written as themselves, UTF-8 encoded;
``occurred_at`` as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC. The digest is the
lowercase hex SHA-256 of those bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from json.encoder import encode_basestring as _quote  # what the encoder uses
from typing import Any

#: The fields covered by the digest, in the order exports and the API show them.
CONTENT_FIELDS = (
    "id",
    "tenant_id",
    "occurred_at",
    "action",
    "feature",
    "operation",
    "entity_type",
    "entity_id",
    "actor_type",
    "actor_id",
    "actor_label",
    "passkey",
    "ip",
    "country",
    "user_agent",
    "client",
    "request_id",
    "metadata",
    "before",
    "after",
)

#: Every stored field in the order exports and the HTTP API list them.
COLUMNS = (*CONTENT_FIELDS, "seq", "digest")

#: The fields holding JSON documents (the rest are scalars).
JSON_COLUMNS = frozenset({"client", "metadata", "before", "after"})

# Two Crockford base32 digits (the ULID alphabet) per 10 bits.
_DIGITS = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [_DIGITS[i >> 5] + _DIGITS[i & 31] for i in range(1024)]
_SHIFTS = tuple(range(120, -1, -10))


def new_entry_id() -> str:
    """``log_`` + a ULID: unique, and sortable by creation time.

    The ULID layout (48 bits of milliseconds, 80 random bits, 26 Crockford
    base32 digits), made here because it sits on every write; python-ulid
    is the reference the tests check these ids against.
    """
    return _entry_id((time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10)))


def new_entry_ids(count: int) -> list[str]:
    """``count`` ids as :func:`new_entry_id` makes them, with one clock read
    and one read of os.urandom for all."""
    if count == 1:  # most flushes: spare them the batch's slicing
        return [new_entry_id()]
    ms = (time.time_ns() // 1_000_000) << 80
    randomness = os.urandom(10 * count)
    return [
        _entry_id(ms | int.from_bytes(randomness[at : at + 10])) for at in range(0, 10 * count, 10)
    ]


def _entry_id(value: int) -> str:
    return "log_" + "".join([_PAIRS[(value >> s) & 1023] for s in _SHIFTS])


def utc(value: dt.datetime) -> dt.datetime:
    """``value`` as an aware UTC datetime (naive values are taken as UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def iso(value: dt.datetime) -> str:
    """The one timestamp format of whodid: UTC, microseconds, ``Z``."""
    # isoformat is several times faster than strftime, which matters on export.
    return utc(value).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


#: The canonical JSON text of a value (keys sorted, compact, UTF-8 as is).
#: One encoder for the process: json.dumps with options builds one per call.
canonical_json = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def canonical(row: Mapping[Any, Any]) -> bytes:
    """The canonical bytes of an entry (see the module docstring)."""
    doc = {name: row[name] for name in CONTENT_FIELDS}
    doc["occurred_at"] = iso(row["occurred_at"])
    return canonical_json(doc).encode("utf-8")


_KEYED = [(name, f'"{name}":') for name in sorted(CONTENT_FIELDS)]


def canonical_spliced(row: Mapping[str, Any], encoded: Mapping[str, str | None]) -> str:
    """:func:`canonical` as text, from a row whose ``occurred_at`` is already
    ISO text and whose JSON fields are already in ``encoded`` (canonical text).

    The writer encodes each JSON field once for storage; splicing those texts
    into the document spares encoding them a second time for the digest.
    The result is the same text json.dumps gives: same key order, same escapes.
    """
    parts = []
    for name, key in _KEYED:
        if name in encoded:
            text = encoded[name]
            parts.append(key + ("null" if text is None else text))
            continue
        value = row[name]
        if value.__class__ is str:
            parts.append(key + _quote(value))
        elif value is None:
            parts.append(key + "null")
        else:
            parts.append(key + canonical_json(value))
    return "{" + ",".join(parts) + "}"


def digest(row: Mapping[Any, Any]) -> str:
    return hashlib.sha256(canonical(row)).hexdigest()


@dataclass(frozen=True, slots=True)
class Entry:
    """An audit entry as read back from the database."""

    id: str
    tenant_id: str | None
    occurred_at: dt.datetime
    action: str
    feature: str
    operation: str
    entity_type: str | None
    entity_id: str | None
    actor_type: str
    actor_id: str | None
    actor_label: str | None
    passkey: bool
    ip: str | None
    country: str | None
    user_agent: str | None
    client: dict[str, Any] | None
    request_id: str | None
    metadata: dict[str, Any]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    seq: int
    digest: str

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Entry:
        values = {name: row[name] for name in ENTRY_FIELDS}
        values["occurred_at"] = utc(values["occurred_at"])
        values["passkey"] = bool(values["passkey"])
        values["metadata"] = values["metadata"] or {}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as the HTTP API and NDJSON export show it.

        Nested values are shared with the entry, not copied: treat as read-only.
        """
        data = {name: getattr(self, name) for name in ENTRY_FIELDS}
        data["occurred_at"] = iso(self.occurred_at)
        return data

    def verify_digest(self) -> bool:
        """Whether the stored digest matches the entry's content."""
        return digest({name: getattr(self, name) for name in CONTENT_FIELDS}) == self.digest


#: Every field of an Entry, in order: the content fields, then seq and digest.
ENTRY_FIELDS = tuple(f.name for f in fields(Entry))
