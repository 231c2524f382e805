"""The writer's fast canonical form is byte for byte entry.canonical()."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from whodid.entry import (
    CONTENT_FIELDS,
    canonical,
    canonical_json,
    canonical_spliced,
    iso,
    new_entry_id,
)
from whodid.writer import ENCODED, Change, Writer

JSON_FIELDS = ("client", "metadata", "before", "after")
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**64)  # beyond 64 bits
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),  # any code point: controls, quotes, surrogates, U+2028
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=12,
)
scalars = st.none() | st.text() | st.booleans() | st.integers()


@settings(max_examples=400)
@given(
    st.fixed_dictionaries(
        {name: json_values if name in JSON_FIELDS else scalars for name in CONTENT_FIELDS}
    ),
    st.datetimes(timezones=st.just(dt.UTC)),
)
def test_spliced_equals_canonical(row: dict[str, Any], at: dt.datetime) -> None:
    row = {**row, "occurred_at": at}
    encoded = {n: None if row[n] is None else canonical_json(row[n]) for n in JSON_FIELDS}
    try:
        expected = canonical(row)
    except UnicodeEncodeError:  # a lone surrogate: neither form can be UTF-8
        return
    spliced = canonical_spliced({**row, "occurred_at": iso(at)}, encoded)
    assert spliced.encode("utf-8") == expected


@given(st.dictionaries(st.text(), json_values, max_size=4), json_values)
def test_writer_rows_carry_the_digest_of_their_canonical_form(meta: Any, after: Any) -> None:
    import hashlib

    try:
        [row] = Writer().rows([Change("thing", "update", "thing", "1", {"a": 1}, after, meta)])
    except (ValueError, UnicodeEncodeError):
        return  # not JSON (NaN) or not UTF-8: the writer refuses it like canonical() does
    content = {name: row[name] for name in CONTENT_FIELDS}
    assert hashlib.sha256(canonical(content)).hexdigest() == row["digest"]
    assert row[ENCODED]["after"] == (None if after is None else canonical_json(after))


def test_entry_ids_are_ulids() -> None:
    from ulid import ULID

    for _ in range(200):
        entry_id = new_entry_id()
        assert entry_id.startswith("log_") and len(entry_id) == 30
        assert str(ULID.from_str(entry_id[4:])) == entry_id[4:]
    assert new_entry_id() != new_entry_id()


@given(st.dictionaries(st.text(), json_values, max_size=4))
def test_a_client_of_any_shape_is_stored_and_hashed_canonically(client: dict[str, Any]) -> None:
    # The client document is encoded once per flush, through orjson where that
    # writes json's bytes (floats, big ints and the like take json itself).
    import hashlib

    from whodid import audit_context
    from whodid.enrich import Enricher

    class Custom(Enricher):
        def client(self, user_agent: str | None) -> dict[str, object] | None:
            return client

    try:
        expected = canonical_json(client)
        expected.encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return  # not JSON or not UTF-8: canonical() refuses it too
    with audit_context(user_agent="agent/1.0"):
        [row] = Writer(Custom()).rows([Change("thing", "create", "thing", "1", after={"a": 1})])
    assert row[ENCODED]["client"] == expected
    content = {name: row[name] for name in CONTENT_FIELDS}
    assert hashlib.sha256(canonical(content)).hexdigest() == row["digest"]
