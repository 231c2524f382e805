"""Column values as exact, JSON-safe data, and the redaction of secret ones.

An audit entry must say exactly what a value was: ``Decimal("10.10")`` stays
the string ``"10.10"`` (never the float 10.1), datetimes keep their offset,
bytes are kept as base64 under a marker key. A value nothing can represent is
replaced by a marker naming its type, so the entry is still written.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from whodid.fastjson import SCALARS

REDACTED = "[REDACTED]"
DEFAULT_REDACT_PATTERNS = ("password", "secret", "token", "api_key", "ssn", "card_number")
MAX_DEPTH = 32


def to_json(value: Any, _depth: int = 0) -> Any:
    """``value`` as data made of dict, list, str, int, float, bool and None."""
    # Most column values: an exact type look-up is half the cost of isinstance()
    # of a union, and this runs for every tracked column of every change.
    if value.__class__ in SCALARS or isinstance(value, bool | int | str):
        return value
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
        return {str(k): to_json(v, _depth + 1) for k, v in value.items()}
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


def _unserializable(value: Any, why: str = "not JSON-serialisable") -> dict[str, str]:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not lose the entry
        text = "<repr failed>"
    return {"$unserializable": type(value).__qualname__, "repr": text[:200], "why": why}


class Redactor:
    """Decides which column names hold secrets, by substring or exact name."""

    def __init__(self, patterns: Iterable[str] = DEFAULT_REDACT_PATTERNS) -> None:
        words = [re.escape(p.lower()) for p in patterns if p]
        self._pattern = re.compile("|".join(words)) if words else None

    def __call__(self, name: str, extra: frozenset[str] = frozenset()) -> bool:
        if name in extra:
            return True
        return self._pattern is not None and self._pattern.search(name.lower()) is not None
