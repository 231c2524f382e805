"""Log streams on PostgreSQL: transactions committing out of seq order (issue 22).

Seqs are handed out at insert, not at commit. A reader that moves past "the
highest seq seen" skips an entry whose transaction commits later than one
holding a higher seq; the relay ships by windows of the snapshot's xmin
instead, and a rolled-back seq does not hold it up.
"""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa

from support.entries import entry_row
from whodid import Auditor
from whodid.errors import ConfigurationError
from whodid.store.schema import TABLE

pytestmark = pytest.mark.postgres


@pytest.fixture
def auditor(pg_url: str):
    auditor = Auditor(pg_url)
    yield auditor
    assert auditor.engine is not None
    auditor.engine.dispose()


def shipped(path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["entity_id"] for line in path.read_text().splitlines()]


def insert(auditor: Auditor, conn: sa.Connection, name: str) -> int:
    """Write one entry named ``name`` in ``conn``'s open transaction; its seq."""
    auditor.writer.write(conn, [entry_row(auditor, entity=("customer", name))])
    return int(conn.exec_driver_sql(f"SELECT max(seq) FROM {TABLE}").scalar_one())


def test_an_entry_committing_after_a_higher_seq_is_still_shipped(auditor, tmp_path):
    out = tmp_path / "out.ndjson"
    relay = auditor.stream(str(out))
    engine = auditor.engine
    with engine.connect() as slow, engine.connect() as fast:
        slow.begin()
        low_seq = insert(auditor, slow, "slow")  # seq n, not yet committed
        fast.begin()
        high_seq = insert(auditor, fast, "fast")  # seq n+1
        fast.commit()
        assert high_seq > low_seq
        # "fast" is committed, but an older transaction is still running: it waits.
        relay.drain()
        assert shipped(out) == []
        slow.commit()
    relay.drain()
    assert shipped(out) == ["slow", "fast"]  # both, seq order among those visible together


def test_a_transaction_holding_an_old_xid_holds_back_newer_ones_only_until_it_ends(
    auditor, tmp_path
):
    out = tmp_path / "out.ndjson"
    relay = auditor.stream(str(out))
    engine = auditor.engine
    with engine.connect() as old, engine.connect() as new:
        old.begin()
        old.exec_driver_sql("SELECT pg_current_xact_id()")  # it has an xid, and is older
        new.begin()
        insert(auditor, new, "first")
        new.commit()
        relay.drain()
        assert shipped(out) == []
        insert(auditor, old, "second")  # a higher seq, in the older transaction
        old.commit()
    relay.drain()
    assert shipped(out) == ["first", "second"]  # commit order


def test_a_rolled_back_seq_leaves_a_gap_that_does_not_stall_the_relay(auditor, tmp_path):
    out = tmp_path / "out.ndjson"
    relay = auditor.stream(str(out))
    engine = auditor.engine
    with engine.connect() as conn:
        conn.begin()
        gone = insert(auditor, conn, "rolled back")
        conn.rollback()
    with engine.begin() as conn:
        kept = insert(auditor, conn, "kept")
    assert kept > gone + 0  # the gap is permanent
    relay.drain()
    assert shipped(out) == ["kept"]


def test_many_writers_committing_in_any_order_lose_nothing(auditor, tmp_path):
    """Interleaved transactions, committed in a shuffled order, shipped while they run."""
    import random

    out = tmp_path / "out.ndjson"
    relay = auditor.stream(str(out), batch_size=3)
    engine = auditor.engine
    rng = random.Random(22)
    connections = [engine.connect() for _ in range(6)]
    names: list[str] = []
    try:
        for round_ in range(5):
            for conn in connections:
                conn.begin()
            for i, conn in enumerate(connections):
                for k in range(rng.randint(1, 3)):
                    name = f"r{round_}-c{i}-{k}"
                    insert(auditor, conn, name)
                    names.append(name)
            order = connections[:]
            rng.shuffle(order)
            for n, conn in enumerate(order):
                if n == 2:
                    conn.rollback()  # one transaction a round is rolled back
                    gone = f"r{round_}-c{connections.index(conn)}-"
                    names = [x for x in names if not x.startswith(gone)]
                else:
                    conn.commit()
                relay.run_once()
    finally:
        for conn in connections:
            conn.close()
    relay.drain()
    got = shipped(out)
    assert sorted(got) == sorted(names)
    assert len(got) == len(set(got))


def test_a_log_without_txids_is_refused_until_upgraded_and_old_entries_ship_once(auditor, tmp_path):
    from whodid.errors import ConfigurationError

    with auditor.engine.begin() as conn:
        insert(auditor, conn, "before")
        # The log as a whodid before streams made it: no txid column.
        conn.exec_driver_sql(f"ALTER TABLE {TABLE} DROP COLUMN txid")
    out = tmp_path / "out.ndjson"
    with pytest.raises(ConfigurationError, match="whodid upgrade"), auditor.stream(str(out)) as r:
        r.drain()
    auditor.upgrade()
    with auditor.engine.begin() as conn:
        insert(auditor, conn, "after")
    relay = auditor.stream(str(out))
    relay.drain()
    relay.drain()
    assert shipped(out) == ["before", "after"]


def test_a_partitioned_log_streams_too(pg_empty_url, tmp_path):
    auditor = Auditor(pg_empty_url)
    auditor.create_all(partitioned=True)
    with auditor.engine.begin() as conn:
        insert(auditor, conn, "in a partition")
    out = tmp_path / "out.ndjson"
    auditor.stream(str(out)).drain()
    assert shipped(out) == ["in a partition"]
    auditor.engine.dispose()


def test_two_relays_cannot_ship_one_stream_at_once(auditor, tmp_path):
    from whodid.errors import ConfigurationError

    first = auditor.stream(str(tmp_path / "a.ndjson"), name="siem")
    first.drain()
    second = auditor.stream(str(tmp_path / "b.ndjson"), name="siem")
    with pytest.raises(ConfigurationError, match="another relay is shipping stream 'siem'"):
        second.drain()
    auditor.stream(str(tmp_path / "c.ndjson"), name="other").drain()  # another name is free
    first.close()
    second.drain()  # taken over once the first let go


def test_a_killed_relays_claim_ends_with_its_connection(auditor, tmp_path):
    first = auditor.stream(str(tmp_path / "a.ndjson"), name="siem")
    first.drain()
    first._claim._conn.invalidate()  # the process died: its session is gone
    # The server frees the lock once it notices the session is gone: soon, not at once.
    deadline = time.monotonic() + 10
    while True:
        try:
            auditor.stream(str(tmp_path / "b.ndjson"), name="siem").drain()
            break
        except ConfigurationError:
            assert time.monotonic() < deadline, "the dead session's lock was never freed"
            time.sleep(0.05)


def test_transaction_ids_going_back_stop_the_stream_instead_of_skipping(auditor, tmp_path):
    """A restore onto another server restarts its txids: the stream says so and stops."""
    from whodid.errors import ConfigurationError
    from whodid.store import feed

    with auditor.engine.begin() as conn:
        feed.check_ready(conn)
        feed.save_position(conn, "siem", feed.Position(10**12, 10**12 + 5, 0, 7))
        insert(auditor, conn, "after the restore")
    with (
        pytest.raises(ConfigurationError, match="transaction ids went back"),
        auditor.stream(str(tmp_path / "out.ndjson"), name="siem") as relay,
    ):
        relay.drain()
