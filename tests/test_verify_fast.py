"""verify()'s fast path: the same canonical bytes as entry.canonical(), the same
reports in one process or several, on real SQLite files and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_integrity import tamper
from whodid.entry import fastjson
from whodid.entry.fields import CONTENT_FIELDS, canonical, digest, iso, new_entry_id
from whodid.integrity import verify as integrity
from whodid.store.schema import create_all, entries

KEY = Ed25519PrivateKey.generate()
T0 = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)

# -- fastjson against the stdlib ----------------------------------------------

any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e16, 1e-5, 1e22, -0.0, 0.1, 5e-324, 1.7976931348623157e308])
    | st.text(max_size=12)
    | any_text
    | st.sampled_from(["\x00\x1f\x7f\u2028\u2029\ufeff", '"\\/', "Zürich 😀", "\ud800"])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=20,
)
documents = st.dictionaries(any_text | st.text(max_size=8), json_values, max_size=5)


def _unsafe(value: Any) -> bool:
    """Whether fastjson may refuse ``value``: a float or an int beyond 64 bits inside."""
    if isinstance(value, float):
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not -(2**63) <= value < 2**64
    if isinstance(value, dict):
        return any(_unsafe(v) for v in value.values())
    if isinstance(value, list):
        return any(_unsafe(v) for v in value)
    return False


def _stdlib(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


@settings(max_examples=600, deadline=None)
@given(
    metadata=documents,
    client=st.none() | documents,
    before=st.none() | documents,
    after=st.none() | documents,
    text=st.none() | any_text,
    passkey=st.booleans(),
)
def test_fast_canonical_bytes_are_canonical(
    metadata: Any, client: Any, before: Any, after: Any, text: Any, passkey: bool
) -> None:
    row: dict[str, Any] = dict.fromkeys(CONTENT_FIELDS, text)
    row.update(
        occurred_at=T0,
        passkey=passkey,
        metadata=metadata,
        client=client,
        before=before,
        after=after,
    )
    fast = fastjson.dumps({**row, "occurred_at": iso(T0)})
    try:
        expected = canonical(row)
    except (ValueError, UnicodeEncodeError):  # lone surrogates: canonical() cannot either
        assert fast is None
        return
    if fast is None:
        assert _unsafe(row)
    else:
        assert fast == expected


@settings(max_examples=600, deadline=None)
@given(
    value=json_values,
    indent=st.none() | st.integers(0, 2),
    ensure_ascii=st.booleans(),
    spaced=st.booleans(),
)
def test_decoding_through_orjson_matches_json_loads(
    value: Any, indent: int | None, ensure_ascii: bool, spaced: bool
) -> None:
    separators = (", ", ": ") if spaced else (",", ":")
    try:
        text = json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, separators=separators)
    except (ValueError, UnicodeEncodeError):
        return
    _decodes_alike(text)


@settings(max_examples=400, deadline=None)
@given(
    text=any_text | st.text(alphabet='{}[]:,"\\ -+.eE0123456789truefalsnNIfiy\ud800u', max_size=30)
)
def test_decoding_odd_texts_matches_json_loads(text: str) -> None:
    _decodes_alike(text)


def _decodes_alike(text: str) -> None:
    """Where verify keeps orjson's decoding, it equals json.loads' to the canonical byte."""
    try:
        fast = orjson.loads(text)
    except Exception:
        return  # verify falls back to json.loads
    if not fastjson.plain(fast):
        return  # ditto
    slow = json.loads(text)
    assert fastjson.dumps({"v": fast}) == _stdlib({"v": slow})


def test_plain() -> None:
    assert fastjson.plain({"a": [1, "x", None, True, {"b": []}]})
    assert not fastjson.plain({"a": [1, {"b": [0.5]}]})
    assert not fastjson.plain({"a": b"bytes"})
    assert fastjson.dumps({"a": 1.5}) is None
    assert fastjson.dumps({"a": 2**64}) is None


# -- verify on real databases -------------------------------------------------

HOSTILE: list[dict[str, Any]] = [
    # Floats that survive JSONB (which turns 1e16 into 10000000000000000).
    {"f": 1.5, "g": 0.1, "n": 1e-7, "i": 3.0, "t": 2.5e-300},
    {"big": 123456789012345678901234567890, "neg": -(2**70), "u64": 2**64 - 1, "i64": -(2**63)},
    {"s": 'Zürich \u2028 \x01\x1f\x7f " \\ / 😀 \ufeff', "k\x01": [1, [2, {"z": None, "a": True}]]},
    {"deep": [[[[{"x": [[["y"]]]}]]]], "": {}, "list": []},
    {},
]


def _row(i: int, metadata: dict[str, Any], **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": new_entry_id(),
        "tenant_id": None if i % 3 == 0 else f"org_{i % 2}",
        "occurred_at": T0 + dt.timedelta(seconds=i, microseconds=i * 7),
        "action": "customer.update",
        "feature": "customer",
        "operation": "update",
        "entity_type": "customer",
        "entity_id": f"cus_{i}",
        "actor_type": "user",
        "actor_id": None if i % 4 == 0 else f"usr_{i}",
        "actor_label": "Åda Lovelace <ada@example.com>",
        "passkey": bool(i % 2),
        "ip": "203.0.113.9",
        "country": "DE",
        "user_agent": "Mozilla/5.0 \t tab",
        "client": None if i % 2 else {"browser": "Firefox 120.0", "is_bot": False},
        "request_id": f"req_{i}",
        "metadata": metadata,
        "before": None if i % 3 else {"status": "pending", "n": i},
        "after": None if i % 3 else {"status": "settled", "n": [i, 1.25]},
    }
    row.update(extra)
    row["digest"] = digest(row)
    return row


@pytest.fixture
def log(engine: sa.Engine) -> sa.Engine:
    """A sealed log of varied entries, floats, huge ints and odd text included, and
    some entries written after the seal."""
    create_all(engine)
    rows = [_row(i, HOSTILE[i % len(HOSTILE)]) for i in range(40)]
    with engine.begin() as conn:
        conn.execute(entries.insert(), rows[:30])
        integrity.seal(conn, KEY)
        conn.execute(entries.insert(), rows[30:])
    return engine


def _entry_rows(engine: sa.Engine, fast: bool) -> list[Any]:
    with engine.connect() as conn:
        reader = integrity._entry_rows if fast else integrity._generic_rows
        return list(reader(conn, None, None, 7))  # type: ignore[operator]


def _report(engine: sa.Engine, workers: int, **kwargs: Any) -> dict[str, Any]:
    with engine.connect() as conn:
        return integrity.verify(conn, KEY.public_key(), workers=workers, **kwargs).as_dict()


def test_fast_rows_equal_sqlalchemy_rows(log: sa.Engine) -> None:
    fast = _entry_rows(log, fast=True)
    assert len(fast) == 40
    assert fast == _entry_rows(log, fast=False)


def test_one_or_several_processes_same_clean_report(log: sa.Engine) -> None:
    ticks: list[int] = []
    alone = _report(log, 1)
    shared = _report(log, 2, progress=ticks.append)
    assert alone["ok"] and alone["sealed"] == 30 and alone["unsealed"] == 10
    assert shared == alone
    assert sum(ticks) == 40


def test_one_or_several_processes_same_problems(log: sa.Engine) -> None:
    with log.connect() as conn:
        seqs = conn.execute(sa.select(entries.c.seq).order_by(entries.c.seq)).scalars().all()
    edited, swap_a, swap_b, deleted, moved = seqs[3], seqs[8], seqs[20], seqs[15], seqs[29]
    tamper(
        log,
        f"UPDATE whodid_entries SET actor_label = 'mallory' WHERE seq = {edited}",
        f"DELETE FROM whodid_entries WHERE seq = {deleted}",
        f"UPDATE whodid_entries SET seq = 100000 WHERE seq = {swap_a}",
        f"UPDATE whodid_entries SET seq = {swap_a} WHERE seq = {swap_b}",
        f"UPDATE whodid_entries SET seq = {swap_b} WHERE seq = 100000",
        f"UPDATE whodid_entries SET seq = 5000 WHERE seq = {moved}",
    )
    alone = _report(log, 1)
    assert {p["kind"] for p in alone["problems"]} == {"edited", "reordered", "deleted"}
    assert _report(log, 2) == alone
    assert _report(log, 3) == alone
    tamper(log, f"DELETE FROM whodid_entries WHERE seq >= {seqs[25]} AND seq < 1000")
    alone = _report(log, 1)
    assert alone["problems"][-1]["kind"] == "deleted"
    assert _report(log, 2) == alone


def test_odd_values_stored_behind_whodids_back(log: sa.Engine) -> None:
    """Times and JSON that whodid never writes read the same both ways."""
    with log.connect() as conn:
        top = conn.execute(sa.select(sa.func.max(entries.c.seq))).scalar_one()
    cols = "id, occurred_at, action, feature, operation, actor_type, passkey, metadata, digest"
    if log.dialect.name == "sqlite":
        values = [
            ("'2024-01-02 03:04:05'", '\'{"a": 1.5e300, "b": 1E2}\''),
            ("'2024-01-02T03:04:05.123456+02:00'", "'{\"a\": 123456789012345678901234567890}'"),
            ("'2024-01-02 03:04:05.1234567'", '\'{"a": 1, "a": 2}\''),
            ("'0001-01-01 00:00:00.000000'", '\'  {"x": ["\\ud83d\\ude00"]} \''),
        ]
        passkey = "2"
    else:
        values = [
            ("'0001-01-01 00:00:00+00'", "'{\"a\": 1.5e300}'"),
            ("'9999-12-31 23:59:59.999999+00'", '\'{"a": 1e16, "b": 1.0}\''),
            ("'2024-01-02 03:04:05.5+05:30'", "'{\"a\": 123456789012345678901234567890}'"),
            ("'1969-12-31 23:59:59.999999+00'", '\'{"é": "\\u0001"}\''),
        ]
        passkey = "true"
    statements = [
        f"INSERT INTO whodid_entries ({cols}) VALUES ('log_odd{i}', {at}, 'x.y', 'x', 'y', "
        f"'user', {passkey}, {doc}, 'not-a-digest')"
        for i, (at, doc) in enumerate(values)
    ]
    tamper(log, *statements)
    fast = _entry_rows(log, fast=True)
    assert len(fast) == 44 and fast[-1][0] > top
    assert fast == _entry_rows(log, fast=False)
    assert _report(log, 2) == _report(log, 1)


@pytest.mark.parametrize(
    "doc", ["'{\"a\": NaN}'", "'[1E400]'", '\'{"a": "\\ud800"}\'', "'{\"a\": 1'"]
)
def test_sqlite_documents_json_refuses_fail_the_same_way(sqlite_url: str, doc: str) -> None:
    # Only SQLite stores JSON as unchecked text, so only there can it be malformed.
    engine = sa.create_engine(sqlite_url)
    create_all(engine)
    tamper(
        engine,
        "INSERT INTO whodid_entries (id, occurred_at, action, feature, operation, actor_type, "
        f"passkey, metadata, digest) VALUES ('log_x', '2024-01-02 03:04:05.000000', 'x.y', 'x', "
        f"'y', 'user', 0, {doc}, 'd')",
    )
    errors = []
    for fast in (True, False):
        with pytest.raises((ValueError, UnicodeEncodeError)) as caught:
            _entry_rows(engine, fast)
        errors.append(type(caught.value))
    assert errors[0] is errors[1]


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(metadata=st.lists(documents, min_size=1, max_size=6))
def test_arbitrary_documents_in_the_database(engine: sa.Engine, metadata: list[Any]) -> None:
    """Whatever JSON the writer could store reads back to the same canonical bytes."""
    create_all(engine)
    rows = []
    for i, doc in enumerate(metadata):
        try:
            row = _row(i, doc)
        except (ValueError, UnicodeEncodeError):  # no digest, no entry
            continue
        if engine.dialect.name == "postgresql" and "\\u0000" in json.dumps(doc):
            continue  # PostgreSQL text holds no NUL
        rows.append(row)
    if not rows:
        return
    with engine.begin() as conn:
        conn.execute(entries.insert(), rows)
    try:
        assert _entry_rows(engine, fast=True) == _entry_rows(engine, fast=False)
    finally:
        tamper(engine, "DELETE FROM whodid_entries")


def _stored_texts(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.exec_driver_sql(
                "SELECT seq, client, metadata, before, after FROM whodid_entries ORDER BY seq"
            )
        ]


def test_sqlite_stores_canonical_json_text(sqlite_url: str) -> None:
    """What lets verify splice the stored text in without decoding it."""
    engine = sa.create_engine(sqlite_url)
    create_all(engine)
    with engine.begin() as conn:
        conn.execute(entries.insert(), [_row(i, HOSTILE[i % len(HOSTILE)]) for i in range(10)])
    for _, *texts in _stored_texts(engine):
        for text in texts:
            if text is not None:
                assert text == json.dumps(
                    json.loads(text),
                    sort_keys=True,
                    separators=(",", ":"),
                    ensure_ascii=False,
                )


def test_sqlite_text_not_canonical_is_judged_on_its_values(sqlite_url: str) -> None:
    """Re-formatted text with the same values passes, as when every entry was
    decoded; text whose values changed fails, sealed or not."""
    engine = sa.create_engine(sqlite_url)
    create_all(engine)
    with engine.begin() as conn:
        conn.execute(entries.insert(), [_row(i, {"b": 1, "a": [1.5, "x"]}) for i in range(6)])
        integrity.seal(conn, KEY)
        conn.execute(entries.insert(), [_row(i, {"b": 1, "a": [1.5, "x"]}) for i in range(6, 9)])
    seqs = [r[0] for r in _stored_texts(engine)]
    tamper(
        engine,
        # Same values, other key order and spacing: a writer that is not whodid's.
        f"""UPDATE whodid_entries SET metadata = '{{ "b": 1, "a": [1.5, "x"] }}'
        WHERE seq IN ({seqs[0]}, {seqs[7]})""",
        # Other values: a sealed and an unsealed entry edited.
        f"""UPDATE whodid_entries SET metadata = '{{"a":[1.5,"y"],"b"\\:1}}'
        WHERE seq IN ({seqs[1]}, {seqs[8]})""",
    )
    report = _report(engine, 1)
    edited = sorted(s for p in report["problems"] for s in p["seqs"] if p["kind"] == "edited")
    assert edited == [seqs[1], seqs[8]]
    assert _entry_rows(engine, fast=True) == _entry_rows(engine, fast=False)


def test_log_written_with_unsorted_json_text_still_verifies(sqlite_url: str) -> None:
    """Logs written before the text was stored sorted: every entry decoded, same report."""
    engine = sa.create_engine(sqlite_url)
    create_all(engine)
    rows = [_row(i, {"z": i, "a": {"y": 1, "b": None}}) for i in range(8)]
    with engine.begin() as conn:
        conn.execute(entries.insert(), rows)
        integrity.seal(conn, KEY)
    for row in rows:
        unsorted = json.dumps(row["metadata"], ensure_ascii=False, separators=(",", ":"))
        unsorted = unsorted.replace(":", "\\:")  # not bind parameters to sa.text()
        tamper(
            engine, f"UPDATE whodid_entries SET metadata = '{unsorted}' WHERE id = '{row['id']}'"
        )
    assert all(t[2].startswith('{"z"') for t in _stored_texts(engine))
    report = _report(engine, 1)
    assert report["ok"] and report["sealed"] == 8
    assert _entry_rows(engine, fast=True) == _entry_rows(engine, fast=False)
