"""The writer's fast canonical form is byte for byte entry.canonical()."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from whodid.entry.fields import (
    CONTENT_FIELDS,
    canonical,
    canonical_json,
    canonical_spliced,
    iso,
    new_entry_id,
    new_entry_ids,
)
from whodid.entry.values import to_json
from whodid.store.writer import ENCODED, Change, Writer

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


def test_entry_ids_made_together_are_ulids_of_one_moment() -> None:
    from ulid import ULID

    before = new_entry_id()
    ids = new_entry_ids(500)
    assert len(set(ids)) == 500 and new_entry_ids(1)[0] not in ids
    stamps = {str(ULID.from_str(i[4:]))[:10] for i in ids}
    assert len(stamps) == 1  # one clock read: the same millisecond prefix
    assert all(str(ULID.from_str(i[4:])) == i[4:] for i in ids)
    assert before[4:14] <= ids[0][4:14]


def test_every_change_of_a_flush_gets_its_own_digest_and_tenant() -> None:
    # Several changes share the context's part of the digest document; each
    # entry's digest must still be the one of its own canonical form.
    import hashlib

    from whodid import Actor, audit_context

    changes = [
        Change("thing", "create", "thing", str(i), after={"n": i}, tenant_id=f"t{i % 2}")
        for i in range(5)
    ]
    changes.append(Change("thing", "update", "thing", "x", {"f": 0.5}, {"f": 1.5}))  # json path
    with audit_context(actor=Actor.user("usr_1", "ada@example.com"), ip="203.0.113.7"):
        rows = Writer().rows(changes)
    assert [r["tenant_id"] for r in rows] == ["t0", "t1", "t0", "t1", "t0", None]
    assert len({r["id"] for r in rows}) == 6
    for row in rows:
        content = {name: row[name] for name in CONTENT_FIELDS}
        assert hashlib.sha256(canonical(content)).hexdigest() == row["digest"]


@given(st.dictionaries(st.text(), json_values, max_size=4))
def test_a_client_of_any_shape_is_stored_and_hashed_canonically(client: dict[str, Any]) -> None:
    # The client document is encoded once per flush, through orjson where that
    # writes json's bytes (floats, big ints and the like take json itself).
    import hashlib

    from whodid import audit_context
    from whodid.store.enrich import Enricher

    class Custom(Enricher):
        def client(self, user_agent: str | None) -> dict[str, object] | None:
            return client

    # Stored as whodid stores any value: through to_json (1e16 as the integer
    # JSONB reads it back as, NaN as text, a lone surrogate under $escaped).
    expected = canonical_json(to_json(client))
    with audit_context(user_agent="agent/1.0"):
        [row] = Writer(Custom()).rows([Change("thing", "create", "thing", "1", after={"a": 1})])
    assert row[ENCODED]["client"] == expected
    content = {name: row[name] for name in CONTENT_FIELDS}
    assert hashlib.sha256(canonical(content)).hexdigest() == row["digest"]


def test_context_values_of_str_subclasses_take_the_json_path() -> None:
    # orjson is only trusted with exact types: an actor label or tenant that is
    # a StrEnum member (any str subclass) sends the flush through json itself.
    import enum
    import hashlib

    from whodid import Actor, audit_context
    from whodid.context import current_context
    from whodid.store.writer import _base_doc

    class Name(enum.StrEnum):
        ADA = "ada o'brien"
        ORG = "org_1"

    with audit_context(actor=Actor.user("usr_1", Name.ADA), tenant_id=Name.ORG):
        writer = Writer()
        assert _base_doc(writer._context_fields(current_context()), None) is None
        rows = writer.rows([Change("thing", "create", "thing", str(i)) for i in range(2)])
    for row in rows:
        assert row["actor_label"] == "ada o'brien" and row["tenant_id"] == "org_1"
        content = {name: row[name] for name in CONTENT_FIELDS}
        assert hashlib.sha256(canonical(content)).hexdigest() == row["digest"]
