"""Log streams: every committed entry shipped once, in order, resumable (issue 22).

Real parts only: SQLite files and the test PostgreSQL server, an HTTPS server
with certificates made here, files on disk. rsyslog has its own module
(test_stream_syslog.py); the crash tests are in test_stream_crash.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from support.entries import exported, put
from support.pgserver import free_port
from support.sinks import Certificates, HTTPSSink
from whodid import ALL_TENANTS, Actor, Auditor
from whodid.errors import ConfigurationError
from whodid.stream import FileDestination, Relay, StreamFilter

SECRET = "s3cret-for-the-stream-tests-0001"
OLD_SECRET = "old-secret-for-the-stream-tests-2"


@pytest.fixture
def auditor(db_auditor):
    return db_auditor


@pytest.fixture
def sink(certs: Certificates):
    sink = HTTPSSink(certs, [SECRET]).start()
    yield sink
    sink.stop()


def read_ndjson(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_file_stream_ships_every_entry_once_in_seq_order_and_resumes(auditor, tmp_path):
    out = tmp_path / "audit.ndjson"
    for n in range(5):
        put(auditor, entity=("customer", f"cus_{n}"))
    with auditor.stream(str(out), batch_size=2) as relay:
        assert relay.drain() == 5
    first = read_ndjson(out)
    assert [e["seq"] for e in first] == sorted(e["seq"] for e in first)
    for n in range(5, 8):
        put(auditor, entity=("customer", f"cus_{n}"))
    # A new relay under the same name starts where the last one stopped.
    assert auditor.stream(str(out)).drain() == 3
    shipped = read_ndjson(out)
    assert [e["entity_id"] for e in shipped] == [f"cus_{n}" for n in range(8)]
    # The same bytes an export writes, line for line.
    assert shipped == exported(auditor)


def test_shipping_writes_no_audit_entries(auditor, tmp_path):
    put(auditor)
    before = auditor.count(tenant_id=ALL_TENANTS)
    auditor.stream(str(tmp_path / "a.ndjson")).drain()
    auditor.stream(str(tmp_path / "b.ndjson"), name="second").drain()
    assert auditor.count(tenant_id=ALL_TENANTS) == before


def test_each_stream_keeps_its_own_position(auditor, tmp_path):
    put(auditor)
    a, b = tmp_path / "a.ndjson", tmp_path / "b.ndjson"
    auditor.stream(str(a), name="siem").drain()
    put(auditor)
    auditor.stream(str(b), name="warehouse").drain()
    auditor.stream(str(a), name="siem").drain()
    assert len(read_ndjson(a)) == 2
    assert len(read_ndjson(b)) == 2


def test_filters_choose_entries_and_the_position_moves_past_the_rest(auditor, tmp_path):
    put(auditor, tenant="org_1", action="payment.refund")
    put(auditor, tenant="org_2", action="payment.refund")
    put(auditor, tenant="org_1", action="customer.create")
    put(auditor, tenant="org_1", action="payment.capture", actor=Actor.api_key("key_1", "ci"))
    put(auditor, tenant=None, action="payment.refund")
    out = tmp_path / "f.ndjson"
    relay = auditor.stream(
        str(out),
        tenants=["org_1", None],
        action_prefixes=["payment."],
        actor_types=["user"],
        batch_size=2,
    )
    assert relay.drain() == 5  # every entry read, two shipped
    shipped = read_ndjson(out)
    assert [(e["tenant_id"], e["action"]) for e in shipped] == [
        ("org_1", "payment.refund"),
        (None, "payment.refund"),
    ]
    assert relay.position.shipped == 5 and relay.delivered == 2


def test_start_now_skips_what_is_already_committed(auditor, tmp_path):
    put(auditor, entity=("customer", "old"))
    out = tmp_path / "now.ndjson"
    relay = auditor.stream(str(out), start="now")
    assert relay.drain() == 0
    put(auditor, entity=("customer", "new"))
    relay.drain()
    assert [e["entity_id"] for e in read_ndjson(out)] == ["new"]


def test_a_file_rotates_by_size_without_splitting_a_batch(auditor, tmp_path):
    for n in range(12):
        put(auditor, entity=("customer", f"cus_{n}"))
    out = tmp_path / "rot.ndjson"
    relay = auditor.stream(FileDestination(out, max_bytes=2500, backups=10), batch_size=3)
    relay.drain()
    rotated = sorted(tmp_path.glob("rot.ndjson.*"), key=lambda p: -int(p.suffix[1:]))
    assert len(rotated) >= 2  # it did rotate; rot.ndjson.1 is the newest
    ordered = [*rotated, out]
    entries = [e for p in ordered for e in read_ndjson(p)]
    assert [e["entity_id"] for e in entries] == [f"cus_{n}" for n in range(12)]
    for p in ordered:
        assert len(read_ndjson(p)) % 3 == 0 or p == out  # whole batches per file


def test_https_batches_are_signed_and_every_entry_arrives(auditor, sink, certs):
    for n in range(7):
        put(auditor, entity=("customer", f"cus_{n}"))
    relay = auditor.stream(sink.url, secrets=[SECRET], ca=str(certs.ca), batch_size=3)
    relay.drain()
    assert [len(b) for b in sink.batches] == [3, 3, 1]
    assert sink.entries == exported(auditor)


def test_a_rotated_secret_signs_with_both_until_the_old_one_is_dropped(auditor, sink, certs):
    put(auditor)
    sink.secrets = [OLD_SECRET]  # the receiver still knows only the old secret
    auditor.stream(sink.url, secrets=[SECRET, OLD_SECRET], ca=str(certs.ca)).drain()
    put(auditor)
    sink.secrets = [SECRET]  # ... and then only the new one
    auditor.stream(sink.url, secrets=[SECRET, OLD_SECRET], ca=str(certs.ca)).drain()
    assert sink.statuses == [200, 200]
    assert len(sink.entries) == 2


def test_a_wrong_secret_is_refused_and_the_batch_is_not_counted_delivered(auditor, sink, certs):
    put(auditor)

    def sleep(seconds: float) -> None:
        if len(sink.statuses) == 3:
            relay.stop()  # without a dead-letter file it would retry for ever

    relay = auditor.stream(
        sink.url, secrets=["not-the-secret-the-sink-knows"], ca=str(certs.ca), sleep=sleep
    )
    relay.drain()
    assert set(sink.statuses) == {401}
    assert sink.entries == []
    assert relay.position.shipped == 0  # not recorded as shipped


def test_the_server_certificate_must_be_trusted(auditor, sink):
    put(auditor)
    relay = auditor.stream(sink.url, secrets=[SECRET], sleep=lambda s: relay.stop())
    relay.drain()
    assert relay.failures == 1 and sink.statuses == []
    assert relay.position.shipped == 0


def test_a_destination_down_for_a_while_loses_and_reorders_nothing(auditor, sink, certs):
    for n in range(10):
        put(auditor, entity=("customer", f"cus_{n}"))
    # Requests 1 to 4 fail (503, then the server "restarting"), then it recovers.
    sink.plan = lambda n: 503 if 1 <= n <= 4 else None
    relay = auditor.stream(sink.url, secrets=[SECRET], ca=str(certs.ca), batch_size=3, backoff=0.01)
    relay.drain()
    assert sink.statuses == [200, 503, 503, 503, 503, 200, 200, 200]
    assert [e["entity_id"] for e in sink.entries] == [f"cus_{n}" for n in range(10)]
    assert relay.failures == 4


def test_a_stopped_server_then_back_loses_nothing(auditor, certs, tmp_path):
    for n in range(6):
        put(auditor, entity=("customer", f"cus_{n}"))
    port = free_port()  # nothing listens there yet: connections are refused
    back: list[HTTPSSink] = []
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            back.append(HTTPSSink(certs, [SECRET], port=port).start())  # the server is back

    url = f"https://127.0.0.1:{port}/ingest"
    relay = auditor.stream(
        url, secrets=[SECRET], ca=str(certs.ca), batch_size=4, backoff=0.01, sleep=sleep
    )
    relay.drain()
    back[0].stop()
    assert relay.failures == 3
    assert [e["entity_id"] for e in back[0].entries] == [f"cus_{n}" for n in range(6)]
    # Exponential backoff with full jitter: each wait below its doubling cap.
    assert all(0 <= w <= 0.01 * 2**i for i, w in enumerate(waits))


def test_after_max_attempts_a_batch_goes_to_the_dead_letter_file(auditor, sink, certs, tmp_path):
    for n in range(5):
        put(auditor, entity=("customer", f"cus_{n}"))
    sink.plan = lambda n: 500 if n < 3 else None  # the first batch fails three times
    dead = tmp_path / "dead.ndjson"
    relay = auditor.stream(
        sink.url,
        secrets=[SECRET],
        ca=str(certs.ca),
        batch_size=2,
        max_attempts=3,
        dead_letter=str(dead),
        backoff=0.01,
    )
    relay.drain()
    assert [e["entity_id"] for e in read_ndjson(dead)] == ["cus_0", "cus_1"]
    assert [e["entity_id"] for e in sink.entries] == ["cus_2", "cus_3", "cus_4"]
    assert relay.dead_lettered == 1
    assert relay.position.shipped == 5


@pytest.mark.parametrize(
    ("url", "secrets", "message"),
    [
        ("http://siem.example/in", [SECRET], "unencrypted"),
        ("https://user:pw@siem.example/in", [SECRET], "credentials in headers"),
        ("https://siem.example/in", [], "signing secret"),
        ("ftp://x/y", [], "cannot stream"),
        ("syslog+tls:///", [], "names no host"),
        ("syslog+tcp://siem.example:601", [SECRET], "secrets are for HTTPS"),
    ],
)
def test_bad_destinations_are_refused_with_what_to_do(auditor, url, secrets, message):
    with pytest.raises(ConfigurationError, match=message):
        auditor.stream(url, secrets=secrets)


def test_short_or_too_many_secrets_are_refused(auditor):
    with pytest.raises(ConfigurationError, match="at least 16"):
        auditor.stream("https://siem.example/in", secrets=["short"])
    with pytest.raises(ConfigurationError, match="two while rotating"):
        auditor.stream("https://siem.example/in", secrets=[SECRET, OLD_SECRET, SECRET + "x"])


def test_a_filter_with_no_fields_lets_everything_through():
    assert StreamFilter()(("x",) * 30)


def test_two_relays_read_the_same_log_through_one_engine(auditor, tmp_path):
    assert isinstance(auditor.stream(str(tmp_path / "x"), name="n"), Relay)
    with pytest.raises(ConfigurationError, match="1 to 200"):
        auditor.stream(str(tmp_path / "x"), name="n" * 201)


def test_the_relay_refuses_a_database_without_a_log(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path}/none.db")
    relay = Relay(engine, FileDestination(tmp_path / "x"))
    with pytest.raises(ConfigurationError, match="no audit log"):
        relay.drain()


def test_a_long_answer_does_not_spoil_the_next_request(auditor, sink, certs):
    """A receiver answering more than the relay reads: the connection is not reused
    with the rest of that answer still in it."""
    for n in range(4):
        put(auditor, entity=("customer", f"cus_{n}"))
    sink.answer = b"x" * 200_000
    relay = auditor.stream(sink.url, secrets=[SECRET], ca=str(certs.ca), batch_size=2)
    relay.drain()
    assert sink.statuses == [200, 200] and relay.failures == 0
    assert [e["entity_id"] for e in sink.entries] == [f"cus_{n}" for n in range(4)]


def test_a_lone_string_as_a_filter_is_refused(auditor, tmp_path):
    with pytest.raises(ConfigurationError, match="takes a list"):
        auditor.stream(str(tmp_path / "x"), tenants="org_acme")


def test_a_relay_starts_once(auditor, tmp_path):
    relay = auditor.stream(str(tmp_path / "x"), interval=0.05).start()
    try:
        with pytest.raises(ConfigurationError, match="already running"):
            relay.start()
    finally:
        relay.stop()


def test_without_backups_a_file_never_rotates_away_what_it_shipped(auditor, tmp_path):
    for n in range(6):
        put(auditor, entity=("customer", f"cus_{n}"))
    out = tmp_path / "keep.ndjson"
    with auditor.stream(FileDestination(out, max_bytes=100, backups=0), batch_size=2) as relay:
        relay.drain()
    assert len(read_ndjson(out)) == 6
    assert list(tmp_path.glob("keep.ndjson.*")) == []


def test_an_old_sqlite_log_that_reuses_seqs_is_refused_until_upgraded(tmp_path):
    from test_write_once import old_sqlite_log

    auditor = Auditor(old_sqlite_log(tmp_path / "old.db"))
    with (
        pytest.raises(ConfigurationError, match="whodid upgrade"),
        auditor.stream(str(tmp_path / "out.ndjson")) as relay,
    ):
        relay.drain()
    auditor.upgrade()
    with auditor.stream(str(tmp_path / "out.ndjson")) as relay:
        assert relay.drain() == auditor.count(tenant_id=ALL_TENANTS) > 0


_DISK_FULL = """
import resource, signal, sys
sys.path.insert(0, sys.argv[2])
from whodid.entry.fields import COLUMNS
from whodid.errors import DeliveryError
from whodid.stream import Batch, FileDestination

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal
path = sys.argv[1]
row = tuple(None for _ in COLUMNS)
first = Batch([row], ['{"n": 1}\\n'])
big = Batch([row] * 2, ['{"n": 2, "pad": "' + "x" * 4000 + '"}\\n', '{"n": 3}\\n'])
out = FileDestination(path)
out.send(first)
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (2048, hard))  # the disk fills up mid-batch
try:
    out.send(big)
    raise SystemExit("the write should have failed")
except DeliveryError:
    pass
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space again: the relay retries
out.send(big)
"""


def test_a_batch_cut_short_by_a_full_disk_leaves_no_half_line(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "full.ndjson"
    src = str(Path(__file__).resolve().parents[1] / "src")
    done = subprocess.run(
        [sys.executable, "-c", _DISK_FULL, str(path), src], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_a_purge_says_which_stream_never_got_what_it_deleted(auditor, tmp_path, caplog):
    import datetime as dt
    import logging

    from support.entries import NOW

    put(auditor, days_ago=400, entity=("customer", "shipped"))
    with auditor.stream(str(tmp_path / "siem.ndjson"), name="siem") as relay:
        relay.drain()
    put(auditor, days_ago=399, entity=("customer", "not shipped"))
    put(auditor, days_ago=1, entity=("customer", "kept"))
    with caplog.at_level(logging.WARNING, logger="whodid.retention"):
        (purged,) = auditor.purge(NOW - dt.timedelta(days=30), tenant_id=ALL_TENANTS)
    assert purged.rows == 2 and purged.unshipped == {"siem": 1}
    assert "1 entries log stream 'siem' has not shipped" in caplog.text
    (record,) = auditor.list(action="audit_log.purge", tenant_id=ALL_TENANTS).entries
    assert record.metadata["unshipped_by_stream"] == {"siem": 1}
