"""The whodid command line against a real SQLite file (and PostgreSQL for export)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from support.entries import put
from whodid import ALL_TENANTS, Actor, Auditor
from whodid.cli import main


@pytest.fixture
def db(db_url: str) -> str:
    auditor = Auditor(db_url)
    auditor.create_all()
    put(auditor, action="customer.create", entity=("customer", "cus_1"), request_id="req_1")
    put(
        auditor,
        action="payment.refund",
        entity=("payment", "pay_1"),
        request_id="req_1",
        actor=Actor.api_key("key_1", "sk_live_ab12"),
    )
    put(auditor, tenant="org_2", action="wallet.freeze", entity=("wallet", "wal_1"))
    return db_url


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_list_table_and_json(db):
    code, out = run("list", "--db", db, "--tenant", "org_1")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["WHEN", "(UTC)", "EVENT"]
    assert "payment.refund" in lines[1] and "api_key:sk_live_ab12" in lines[1]
    assert "payment/pay_1" in lines[1]
    code, out = run("list", "--all-tenants", "--db", db, "--action", "wallet.freeze", "--json")
    assert code == 0
    assert [e["entity_id"] for e in json.loads(out)["data"]] == ["wal_1"]
    code, out = run("list", "--db", db, "--tenant", "org_9")
    assert (code, out.strip()) == (0, "No entries match.")


def test_show_prints_entry_with_related(db):
    entry_id = json.loads(
        run("list", "--all-tenants", "--db", db, "--json", "--action", "payment.refund")[1]
    )["data"][0]["id"]
    code, out = run("show", "--all-tenants", entry_id, "--db", db)
    assert code == 0
    data = json.loads(out)
    assert data["id"] == entry_id
    assert [e["action"] for e in data["related"]] == ["customer.create"]
    code, out = run("show", entry_id, "--db", db, "--tenant", "org_2")
    assert code == 1 and "no entry" in out


def test_export_writes_file_and_records_itself(db, tmp_path: Path):
    target = tmp_path / "out.csv"
    code, out = run("export", "--db", db, "--tenant", "org_1", "-o", str(target))
    assert code == 0, out
    rows = list(csv.DictReader(target.open()))
    assert [r["action"] for r in rows] == ["customer.create", "payment.refund"]
    ended, started = Auditor(db).list(action="audit_log.export", tenant_id=ALL_TENANTS).entries
    assert [started.metadata["status"], ended.metadata["status"]] == ["started", "completed"]
    assert ended.metadata["rows"] == 2 and "rows" not in started.metadata
    assert ended.metadata["chain_id"] == started.metadata["chain_id"]
    for entry in (started, ended):
        assert entry.metadata["filters"] == {"tenant_id": "org_1"}
        actor = (entry.actor_type, entry.actor_id, entry.tenant_id)
        assert actor == ("system", "whodid-cli", "org_1")


def test_errors_are_messages_not_tracebacks(db, tmp_path: Path):
    code, out = run("list", "--all-tenants", "--db", db, "--since", "last tuesday")
    assert code == 1 and "ISO 8601" in out and "Traceback" not in out
    code, out = run("list", "--all-tenants", "--db", db, "--limit", "500")
    assert code == 2
    empty = f"sqlite:///{tmp_path}/empty.db"
    sa.create_engine(empty).connect().close()
    code, out = run("list", "--all-tenants", "--db", empty)
    assert code == 1 and "whodid init" in out


def test_keygen_seal_verify_purge(db, tmp_path: Path):
    key = tmp_path / "audit.pem"
    assert run("keygen", str(key))[0] == 0
    assert run("keygen", str(key))[0] == 1  # never overwrites a key
    head = tmp_path / "head.json"
    code, out = run("seal", "--db", db, "--key", str(key), "--head", str(head))
    assert code == 0 and "checkpoint 1: 3 entries" in out
    assert json.loads(head.read_text())["number"] == 1
    code, out = run("verify", "--db", db, "--public-key", f"{key}.pub", "--head", str(head))
    assert code == 0 and out.startswith("OK: 3 entries, 3 sealed")
    code, out = run("verify", "--db", db, "--public-key", f"{key}.pub", "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    other = tmp_path / "other.pem"
    run("keygen", str(other))
    code, out = run("verify", "--db", db, "--public-key", f"{other}.pub")
    assert code == 1 and "WRONG_KEY" in out
    code, out = run(
        "purge", "--all-tenants", "--db", db, "--older-than", "1d", "--yes", "--key", str(key)
    )
    assert (code, out.strip()) == (0, "nothing to purge")
    code, out = run("purge", "--all-tenants", "--db", db, "--older-than", "soon", "--yes")
    assert code != 0 and "duration" in out


def test_index_brings_search_up_to_date(db):
    code, out = run("index", "--db", db)
    postgres = db.startswith("postgresql")
    assert code == 0
    assert out.strip() == ("indexed 3 new entries" if postgres else "search index up to date")
    code, out = run("index", "--db", db)
    assert (code, out.strip()) == (0, "search index up to date")
    code, out = run("list", "--all-tenants", "--db", db, "-q", "pay_1", "--json")
    assert code == 0 and "payment.refund" in out
