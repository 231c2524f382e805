"""Canonical entry bytes through orjson, byte-identical to :func:`whodid.entry.canonical`.

``canonical()`` is ``json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=False, allow_nan=False)`` encoded as UTF-8. orjson with
``OPT_SORT_KEYS`` writes the same bytes for what a stored entry is made of:
dicts with str keys, lists, str, bool, None and 64-bit ints. Same escapes
(``\\"``, ``\\\\``, ``\\b \\f \\n \\r \\t``, ``\\u00XX`` in lowercase for the
other control characters, everything else written as itself in UTF-8) and keys
in code point order, which is UTF-8 byte order.

Where the two differ, this module refuses and the caller takes the stdlib path:

- floats (orjson writes ``0.00001`` where json writes ``1e-05``, and NaN as
  ``null`` where json raises): :func:`dumps` refuses any document holding a
  float, or any type not listed above;
- ints beyond 64 bits: orjson's encoder raises (refused), its decoder turns
  them into floats (refused by the float check);
- NaN, Infinity, lone surrogates, nesting deeper than 1024: orjson's decoder
  raises where json's accepts (callers fall back on any decoder exception);
  lone surrogates and the like make orjson's encoder raise (refused).

``tests/test_verify_fast.py`` checks this with hypothesis against
``canonical()`` and ``json.loads``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import orjson

#: orjson's decoder; callers fall back to ``json.loads`` on any exception.
loads = orjson.loads

_SORT = orjson.OPT_SORT_KEYS
#: The types orjson writes as json does.
SCALARS = frozenset({str, int, bool, type(None)})
_ALLOWED = SCALARS | {dict, list}
#: Below this many items a plain loop beats building a set of their types.
_WIDE = 8


def plain(value: Any) -> bool:
    """Whether ``value`` holds only dicts, lists, str, int, bool and None (no float)."""
    kind = type(value)
    items: Collection[Any]
    if kind is dict:
        items = value.values()
    elif kind is list:
        items = value
    else:
        return kind in SCALARS
    if len(items) > _WIDE:
        # One pass in C decides most wide containers (a row's before/after).
        kinds = set(map(type, items))
        if kinds <= SCALARS:
            return True
        if not kinds <= _ALLOWED:
            return False
    for item in items:
        kind = type(item)
        if kind in SCALARS or ((kind is dict or kind is list) and plain(item)):
            continue
        return False
    return True


def encode(doc: dict[str, Any]) -> bytes | None:
    """orjson's sorted bytes of ``doc``, None if orjson refuses it. Only canonical
    for a ``doc`` that :func:`plain` accepts: the caller checks (see :func:`dumps`)."""
    try:
        return orjson.dumps(doc, option=_SORT)
    except orjson.JSONEncodeError:
        return None


def dumps(doc: dict[str, Any]) -> bytes | None:
    """``doc`` as canonical bytes, or None where orjson might differ from ``json``."""
    return encode(doc) if plain(doc) else None
