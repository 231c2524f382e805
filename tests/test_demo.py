"""The demo app and the CLI commands that exist so far, driven for real."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner
from starlette.testclient import TestClient

from support.models import read_entries
from whodid.cli import main
from whodid.demo import create_app

KEY = {"Authorization": "Bearer sk_live_acme_4f9a2c"}


def test_demo_records_every_change_with_its_actor(tmp_path: Path):
    url = f"sqlite:///{tmp_path}/demo.db"
    with TestClient(create_app(url)) as client:
        client.cookies.set("session", "usr_ada")
        seeded = client.get("/audit/recent").json()["data"]
        assert {e["actor_type"] for e in seeded} >= {"user", "system", "anonymous"}
        assert all(e["tenant_id"] == "org_acme" for e in seeded)  # scoped to ada's org

        client.cookies.clear()
        r = client.post(
            "/customers",
            json={"email": "n@example.com", "tax_id": "X1"},
            headers={**KEY, "X-Request-ID": "req-demo-1"},
        )
        client.cookies.set("session", "usr_ada")
        assert r.status_code == 201 and r.headers["x-request-id"] == "req-demo-1"
        cid = r.json()["id"]
        client.patch(f"/customers/{cid}", json={"name": "New"}, headers={"X-Passkey": "1"})
        pay = client.post(
            "/payments", json={"customer_id": cid, "amount": "9.99"}, headers=KEY
        ).json()["id"]
        client.post(f"/payments/{pay}/refund", headers=KEY)
        client.delete(f"/customers/{cid}")

    mine = [e for e in read_entries(sa.create_engine(url)) if e.entity_id in (cid, pay)]
    actions = [e.action for e in mine]
    # record() writes at once; the ORM update is flushed at commit, just after.
    assert actions[3:5] in (
        ["payment.update", "payment.refund"],
        ["payment.refund", "payment.update"],
    )
    assert actions[:3] + actions[5:] == [
        "customer.create",
        "customer.update",
        "payment.create",
        "payment.delete",
        "customer.delete",
    ]
    create, update = mine[0], mine[1]
    refund = next(e for e in mine if e.action == "payment.refund")
    assert (create.actor_type, create.actor_label, create.request_id) == (
        "api_key",
        "sk_live_acme",
        "req-demo-1",
    )
    assert create.after["tax_id"] == "[REDACTED]"
    assert (update.actor_id, update.passkey, update.after) == ("usr_ada", True, {"name": "New"})
    assert mine[3].request_id == mine[4].request_id  # one request, two entries
    assert refund.metadata == {"amount": "9.99", "currency": "EUR"}


def test_cli_init_creates_the_table(tmp_path: Path):
    url = f"sqlite:///{tmp_path}/cli.db"
    result = CliRunner().invoke(main, ["init", "--db", url])
    assert result.exit_code == 0, result.output
    assert "whodid_entries" in sa.inspect(sa.create_engine(url)).get_table_names()


def test_cli_init_on_a_bad_url_says_what_went_wrong(tmp_path: Path):
    result = CliRunner().invoke(main, ["init", "--db", "nosuchdb://x"])
    assert result.exit_code == 1
    assert "could not set up nosuchdb://x" in result.output
