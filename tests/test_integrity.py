"""Tamper evidence: tamper with the database the way its owner could, and verify names it."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import threading

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from support.entries import put
from whodid import ALL_TENANTS, Auditor, InvalidQuery, Retention
from whodid.entry.fields import digest
from whodid.integrity.verify import generate_key_pair
from whodid.store.schema import checkpoints, entries
from whodid.store.writer import Change

KEY = Ed25519PrivateKey.generate()


@pytest.fixture
def auditor(engine: sa.Engine) -> Auditor:
    auditor = Auditor(engine, signing_key=KEY, seal_grace=dt.timedelta(0))
    auditor.create_all()
    for i in range(6):
        put(auditor, entity=("customer", f"cus_{i}"), metadata={"n": i})
    return auditor


def tamper(engine: sa.Engine, *statements: str) -> None:
    """Run SQL with the append-only triggers bypassed, as a database owner can."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        else:
            for name in (
                conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
                .scalars()
                .all()
            ):
                conn.execute(sa.text(f"DROP TRIGGER {name}"))
        for sql in statements:
            conn.execute(sa.text(sql))


def kinds(report) -> list[str]:  # type: ignore[no-untyped-def]
    return [p.kind for p in report.problems]


def ids(auditor: Auditor) -> dict[int, str]:
    with auditor.engine.connect() as conn:  # type: ignore[union-attr]
        return dict(conn.execute(sa.select(entries.c.seq, entries.c.id)).all())


def test_untouched_log_verifies_clean(auditor):
    checkpoint = auditor.seal()
    assert checkpoint is not None and checkpoint.count == 6
    assert auditor.seal() is None  # nothing new
    put(auditor)
    report = auditor.verify()
    assert report.ok, report.problems
    assert (report.entries, report.sealed, report.unsealed) == (7, 6, 1)
    assert auditor.seal().count == 1
    assert auditor.verify(KEY.public_key()).ok


def test_numbers_that_jsonb_rewrites_still_verify(auditor):
    """JSONB reads 1e16 back as an integer and -0.0 as 0.0; neither may look edited."""
    odd = [1e16, -1.5e300, -0.0, 0.1 + 0.2, 5e-324, 2**70, 9007199254740993, 1.0]
    put(auditor, metadata={"numbers": odd})
    auditor.record("import.run", before={"amount": 1e20}, after={"amount": -0.0})
    auditor.seal()
    report = auditor.verify()
    assert report.ok, report.problems
    [entry] = auditor.list(action="customer.create", limit=200, tenant_id=ALL_TENANTS).entries[:1]
    assert entry.metadata["numbers"][0] == 10**16


def test_edited_entry(auditor, engine):
    auditor.seal()
    tamper(engine, "UPDATE whodid_entries SET actor_label = 'someone-else' WHERE seq = 3")
    report = auditor.verify()
    assert kinds(report) == ["edited"]
    assert report.problems[0].entry_ids == (ids(auditor)[3],)


def test_edited_entry_with_recomputed_digest(auditor, engine):
    auditor.seal()
    with engine.connect() as conn:
        row = dict(conn.execute(sa.select(entries).where(entries.c.seq == 2)).mappings().one())
    row["action"] = "customer.forged"
    tamper(
        engine,
        f"UPDATE whodid_entries SET action = 'customer.forged', "
        f"digest = '{digest(row)}' WHERE seq = 2",
    )
    report = auditor.verify()
    assert kinds(report) == ["edited"]
    assert "recomputed" in report.problems[0].message
    assert report.problems[0].seqs == (2,)


def test_deleted_entry(auditor, engine):
    auditor.seal()
    tamper(engine, "DELETE FROM whodid_entries WHERE seq = 4")
    report = auditor.verify()
    assert kinds(report) == ["deleted"]
    assert report.problems[0].seqs == (4,)


def test_truncated_tail(auditor, engine):
    auditor.seal()
    tamper(engine, "DELETE FROM whodid_entries WHERE seq >= 5")
    report = auditor.verify()
    assert kinds(report) == ["truncated"]
    assert report.problems[0].seqs == (5, 6)


def test_inserted_entry_in_a_sealed_gap(auditor, engine):
    put(auditor)  # seq 7, moved to 20 below: a gap like rolled-back inserts leave
    with engine.connect() as conn:
        last = dict(
            conn.execute(sa.select(entries).order_by(entries.c.seq.desc()).limit(1))
            .mappings()
            .one()
        )
    tamper(engine, f"UPDATE whodid_entries SET seq = 20 WHERE seq = {last['seq']}")
    auditor.seal()  # gap 7..19 pending
    auditor.seal()  # grace 0: the gap is declared rolled back
    forged = {**last, "seq": 10, "id": "log_01FORGED0000000000000000000", "action": "x.forged"}
    forged["digest"] = digest(forged)
    with engine.begin() as conn:  # inserts are allowed; no trigger needed
        conn.execute(entries.insert().values(**forged))
    report = auditor.verify()
    assert kinds(report) == ["inserted"]
    assert report.problems[0].entry_ids == ("log_01FORGED0000000000000000000",)


def test_reordered_entries(auditor, engine):
    auditor.seal()
    with engine.connect() as conn:
        a = conn.execute(sa.select(entries).where(entries.c.seq == 2)).mappings().one()
        b = conn.execute(sa.select(entries).where(entries.c.seq == 5)).mappings().one()
    tamper(
        engine,
        "UPDATE whodid_entries SET seq = 100 WHERE seq = 2",
        "UPDATE whodid_entries SET seq = 2 WHERE seq = 5",
        "UPDATE whodid_entries SET seq = 5 WHERE seq = 100",
    )
    report = auditor.verify()
    assert set(kinds(report)) == {"reordered"}
    assert {frozenset(p.entry_ids) for p in report.problems} == {frozenset({a["id"], b["id"]})}


def test_truncated_checkpoints_caught_by_the_signed_head(auditor, engine):
    auditor.seal()
    put(auditor)
    head = auditor.seal().head()
    tamper(
        engine,
        "DELETE FROM whodid_checkpoints WHERE number = 2",
        "DELETE FROM whodid_entries WHERE seq = 7",
    )
    assert auditor.verify().ok  # without the head the cut is invisible...
    report = auditor.verify(head=head)  # ...with it, named
    assert kinds(report) == ["truncated"]


def test_forged_and_resigned_checkpoints_and_wrong_key(auditor, engine):
    auditor.seal()
    tamper(engine, "UPDATE whodid_checkpoints SET root = 'ab' WHERE number = 1")
    assert "forged_checkpoint" in kinds(auditor.verify())
    other = Ed25519PrivateKey.generate()
    report = auditor.verify(other.public_key())
    assert kinds(report)[0] == "wrong_key"
    # An attacker rewrites the chain over the log with their own key.
    tamper(engine, "DELETE FROM whodid_checkpoints")
    Auditor(engine, signing_key=other).seal()
    report = auditor.verify()
    assert kinds(report) == ["wrong_key", "bad_signature"]


def test_late_commit_with_an_earlier_seq_is_never_a_false_alarm(pg_url):
    """On PostgreSQL a transaction can commit after a seal covered higher seqs."""
    auditor = Auditor(pg_url, signing_key=KEY)  # default grace
    auditor.create_all()
    put(auditor)
    engine = auditor.engine
    assert engine is not None
    slow = engine.connect()
    late = slow.begin()
    # seq 2, inserted but not committed yet
    auditor.writer.write(slow, auditor.writer.rows([Change(feature="payment", operation="create")]))
    put(auditor)  # seq 3, committed
    auditor.seal()  # covers 1 and 3; 2 is pending
    late.commit()
    slow.close()
    report = auditor.verify()
    assert report.ok, report.problems
    assert report.unsealed == 1
    assert auditor.seal().count == 1  # picks up seq 2
    report = auditor.verify()
    assert report.ok and report.unsealed == 0 and report.sealed == 3


def _writer_process(url: str, n: int, worker: int) -> None:
    from whodid import Actor, Auditor, audit_context
    from whodid.store.writer import Change

    auditor = Auditor(url)
    engine = auditor.engine
    assert engine is not None
    with audit_context(actor=Actor.system(f"worker-{worker}")):
        for i in range(n):
            with engine.connect() as conn:
                tx = conn.begin()
                rows = auditor.writer.rows(
                    [Change(feature="job", operation="run", metadata={"i": i})]
                )
                auditor.writer.write(conn, rows)
                if i % 5 == 0:
                    tx.rollback()  # leaves a seq gap on PostgreSQL
                else:
                    tx.commit()


def test_concurrent_writers_with_rollbacks_verify_clean(db_url):
    auditor = Auditor(db_url, signing_key=KEY)
    auditor.create_all()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer_process, args=(db_url, 40, w)) for w in range(3)]
    for p in procs:
        p.start()
    stop = threading.Event()

    def keep_sealing() -> None:
        while not stop.is_set():
            auditor.seal()
            stop.wait(0.02)

    sealer = threading.Thread(target=keep_sealing)
    sealer.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    stop.set()
    sealer.join()
    auditor.seal()
    report = auditor.verify()
    assert report.ok, report.problems
    assert report.entries == report.sealed == 3 * 32


def test_background_sealer(auditor):
    sealer = auditor.seal_every(0.05)
    try:
        for _ in range(100):
            if auditor.verify().sealed == 6:
                break
            threading.Event().wait(0.05)
    finally:
        sealer.stop()
    assert auditor.verify().sealed == 6 and sealer.errors == 0


def test_purge_is_the_only_way_out_and_verify_still_passes(engine):
    auditor = Auditor(engine, signing_key=KEY, retention=Retention.of("365d", {"org_7y": "7y"}))
    auditor.create_all()
    put(auditor, days_ago=400, entity=("customer", "old"))
    put(auditor, days_ago=400, tenant="org_7y", entity=("customer", "kept"))
    put(auditor, days_ago=10, entity=("customer", "young"))
    auditor.seal()
    with pytest.raises(InvalidQuery, match="younger than its retention"):
        auditor.purge(dt.datetime.now(dt.UTC) - dt.timedelta(days=30), tenant_id="org_1")
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM whodid_entries WHERE entity_id = 'old'"))
    results = auditor.purge(tenant_id=ALL_TENANTS)  # the policy: org_1 365 days, org_7y seven years
    assert sum(r.rows for r in results) == 1
    with engine.connect() as conn:
        remaining = set(conn.execute(sa.select(entries.c.entity_id)).scalars())
    assert "old" not in remaining and {"kept", "young"} <= remaining
    [purge_entry] = auditor.list(action="audit_log.purge", tenant_id=ALL_TENANTS).entries
    assert purge_entry.actor_id == "whodid-retention" and purge_entry.metadata["rows"] == 1
    report = auditor.verify()
    assert report.ok, report.problems
    assert report.purged == 1 and report.purged_ranges[0]["tenant_id"] == "org_1"
    with engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(checkpoints)).scalar()
    assert n == 3  # seal, purge record, and the seal purge() made first


def test_keygen_files(tmp_path):
    private, public = generate_key_pair(tmp_path / "k.pem")
    assert private.stat().st_mode & 0o777 == 0o600
    auditor = Auditor("sqlite://", signing_key=private)
    assert auditor.signing_key is not None
    assert json.dumps(str(public)).endswith('.pub"')
