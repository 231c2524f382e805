"""Column values as exact, JSON-safe data, and the redaction of secret ones.

An audit entry must say exactly what a value was: ``Decimal("10.10")`` stays
the string ``"10.10"`` (never the float 10.1), datetimes keep their offset,
bytes are kept as base64 under a marker key. A value nothing can represent is
replaced by a marker naming its type, so the entry is still written.

Markers (objects whose first key starts with ``$``):

- ``{"$base64": ...}``: bytes;
- ``{"$escaped": ...}``: a string holding a NUL or a lone surrogate, which
  PostgreSQL's JSONB or SQLite's UTF-8 text would refuse; the value is the
  string's ASCII JSON form without the quotes (``json.loads('"' + v + '"')``
  gives it back exactly). A dict key like that becomes ``"$escaped:" + v``;
- ``{"$unserializable": type, "repr": first 200 characters, "sha256": of the
  whole repr, "why": ...}``: a value no JSON can hold, or nested deeper than
  :data:`MAX_DEPTH`. The digest makes two such values differ whenever their
  reprs do, so a change past the cut still writes an entry.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from whodid.entry.fastjson import SCALARS

REDACTED = "[REDACTED]"
DEFAULT_REDACT_PATTERNS = ("password", "secret", "token", "api_key", "ssn", "card_number")
#: Deeper than what either database's JSON or Python's own encoder is sure to
#: take; far deeper than real column values.
MAX_DEPTH = 200


def to_json(value: Any, _depth: int = 0) -> Any:
    """``value`` as data made of dict, list, str, int, float, bool and None.

    Every str in the result is an exact ``str`` that both databases store as
    it is (see :func:`storable`); bool and int subclasses become bool and int.
    """
    # Most column values: an exact type look-up is half the cost of isinstance()
    # of a union, and this runs for every tracked column of every change.
    cls = value.__class__
    if cls is str:
        return value if storable(value) else {"$escaped": _escape(value)}
    if cls in SCALARS:  # int, bool, None
        return value
    if isinstance(value, str):  # a subclass (markupsafe.Markup): its own methods may differ
        return to_json(str.__str__(value), _depth)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int) and not isinstance(value, enum.Enum):
        return int(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return to_json(value.value, _depth + 1)
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$base64": base64.b64encode(bytes(value)).decode("ascii")}
    if _depth >= MAX_DEPTH:
        return _unserializable(value, "nested too deeply")
    if isinstance(value, Mapping):
        return {_key(k): to_json(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [to_json(v, _depth + 1) for v in items]
    return _unserializable(value)


def _float(value: float) -> float | int | str:
    # NaN and infinities are not JSON; keep them readable and exact.
    if not math.isfinite(value):
        return repr(value)
    # PostgreSQL's JSONB keeps numbers as decimals: 1e16 reads back as the
    # integer 10000000000000000 and -0.0 as 0.0, which would no longer match
    # the digest. Store them as what they read back as.
    if value == 0:
        return 0.0
    if abs(value) >= 1e16 and value.is_integer():
        return int(value)
    return value


def storable(text: str) -> bool:
    """Whether both databases store ``text`` as it is: no NUL (PostgreSQL's text
    and JSONB refuse it) and no lone surrogate (not encodable as UTF-8)."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escape(text: str) -> str:
    return json.dumps(text)[1:-1]


def _key(key: Any) -> str:
    text: str = key if key.__class__ is str else _exact(key)
    return text if storable(text) else "$escaped:" + _escape(text)


def plain_text(value: Any) -> str | None:
    """``value`` for a text column of an entry: an exact str both databases store.

    NUL and lone surrogates are written as the escapes ``\\u0000`` /
    ``\\udc80``; everything else is kept as it is.
    """
    if value is None:
        return None
    text: str = value if value.__class__ is str else _exact(value)
    if storable(text):
        return text
    return "".join(f"\\u{ord(c):04x}" if _unstorable(c) else c for c in text)


def _exact(value: Any) -> str:
    return str.__str__(value) if isinstance(value, str) else str(value)


def _unstorable(char: str) -> bool:
    return char == "\x00" or "\ud800" <= char <= "\udfff"


def _unserializable(value: Any, why: str = "not JSON-serialisable") -> dict[str, str]:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not lose the entry
        text = "<repr failed>"
    if not storable(text):
        text = _escape(text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    return {
        "$unserializable": plain_text(type(value).__qualname__) or "",
        "repr": text[:200],
        "sha256": digest,
        "why": why,
    }


#: What the new side of an update says when only a redacted value changed: the
#: reader sees that the secret changed without learning it.
REDACTED_CHANGED = "[REDACTED, changed]"


def _normal(name: str) -> str:
    # apiKey, api_key, API-Key and "api key" are one name.
    return re.sub(r"[^a-z0-9]", "", name.lower())


class Redactor:
    """Decides which names hold secrets, and keeps their values out of entries.

    A name matches when a pattern is part of it, compared without case and
    without ``_``, ``-`` or spaces (``apiKey`` matches ``api_key``); names
    listed in ``extra`` match exactly.
    """

    def __init__(self, patterns: Iterable[str] = DEFAULT_REDACT_PATTERNS) -> None:
        words = [re.escape(_normal(p)) for p in patterns if p and _normal(p)]
        self._pattern = re.compile("|".join(words)) if words else None
        self._seen: dict[str, bool] = {}

    def __call__(self, name: str, extra: frozenset[str] = frozenset()) -> bool:
        if name in extra:
            return True
        found = self._seen.get(name)
        if found is None:
            found = self._pattern is not None and self._pattern.search(_normal(name)) is not None
            if len(self._seen) < 10_000:  # names are few; a flood of odd keys is not cached
                self._seen[name] = found
        return found

    def scrub(self, value: Any) -> Any:
        """``value`` (JSON-safe) with every secret-named key's value redacted, at any depth."""
        if isinstance(value, dict):
            return {k: REDACTED if self(k) else self.scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub(v) for v in value]
        return value

    def scrub_pair(self, old: Any, new: Any) -> tuple[Any, Any]:
        """Both sides of an update scrubbed; a secret that changed reads
        :data:`REDACTED_CHANGED` on the new side, so the change still shows."""
        if isinstance(old, dict) and isinstance(new, dict):
            before, after = {}, {}
            for key in old.keys() | new.keys():
                if self(key):
                    if key in old:
                        before[key] = REDACTED
                    if key in new:
                        same = key in old and old[key] == new[key]
                        after[key] = REDACTED if same else REDACTED_CHANGED
                elif key in old and key in new:
                    before[key], after[key] = self.scrub_pair(old[key], new[key])
                elif key in old:
                    before[key] = self.scrub(old[key])
                else:
                    after[key] = self.scrub(new[key])
            return {k: before[k] for k in old if k in before}, {k: after[k] for k in new}
        if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
            pairs = [self.scrub_pair(a, b) for a, b in zip(old, new, strict=True)]
            return [a for a, _ in pairs], [b for _, b in pairs]
        return self.scrub(old), self.scrub(new)

    def entity_id(self, value: str) -> str:
        """A secret used as an id, as a stable pseudonym (SHA-256, not the value)."""
        return "redacted:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:24]
