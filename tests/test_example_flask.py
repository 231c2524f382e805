"""The Flask example driven over HTTP, through the real WSGI middleware, on SQLite and PostgreSQL.

Flask's test client makes a real WSGI call (environ in, status/headers/body out),
so every request below goes through WSGIAuditMiddleware, the app's auth, the
SQLAlchemy session hooks and a real database.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from examples.flask_app import (
    ApiKey,
    Payment,
    User,
    create_api_key,
    create_app,
    create_user,
    db,
    session_cookie,
)
from flask import Flask
from werkzeug.test import TestResponse

from whodid import Actor, audit_context, current_context
from whodid.store.schema import entries

UA = "payments-test/1.0 (+https://example.com)"


@pytest.fixture
def app(db_url: str) -> Iterator[Flask]:
    app = create_app(db_url)
    app.config["TESTING"] = True
    yield app
    app.extensions["payments.db"].remove()
    app.extensions["payments.engine"].dispose()


@dataclass
class Org:
    """One tenant with an API key and a dashboard user, and a client for each."""

    app: Flask
    org_id: str
    key: ApiKey
    secret: str
    user: User
    cookie: str

    def call(
        self,
        method: str,
        path: str,
        *,
        as_: str = "key",
        json: Any = None,
        headers: dict[str, str] | None = None,
        environ: dict[str, Any] | None = None,
        cookies: dict[str, str] | None = None,
    ) -> TestResponse:
        sent = {"User-Agent": UA, **(headers or {})}
        client = self.app.test_client()
        if as_ == "key":
            sent["Authorization"] = f"Bearer {self.secret}"
        elif as_ == "user":
            client.set_cookie("session", self.cookie)
        for name, value in (cookies or {}).items():
            client.set_cookie(name, value)
        # buffered=True makes the test client close the body like a real
        # server does; the middleware's context ends at close().
        response = client.open(
            path, method=method, json=json, headers=sent, environ_base=environ or {}, buffered=True
        )
        assert current_context() is None, "the request's audit context outlived it"
        return response


def make_org(app: Flask, name: str) -> Org:
    org_id = f"org_{name}"
    with app.app_context(), audit_context(actor=Actor.system("test-seed")):
        session = db()
        user = create_user(session, org_id=org_id, email=f"owner@{name}.example")
        key, secret = create_api_key(session, org_id=org_id)
        session.commit()
    return Org(app, org_id, key, secret, user, session_cookie(app, user))


@pytest.fixture
def org(app: Flask) -> Org:
    return make_org(app, "acme")


def audit_rows(app: Flask, **where: Any) -> list[dict[str, Any]]:
    query = sa.select(entries).order_by(entries.c.seq)
    for column, value in where.items():
        query = query.where(entries.c[column] == value)
    with app.extensions["payments.engine"].connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def only(rows: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(rows) == 1, rows
    return rows[0]


def new_customer(org: Org, **fields: Any) -> dict[str, Any]:
    body = {"email": "ada@example.com", "name": "Ada", "tax_id": "DE123456789", **fields}
    response = org.call("POST", "/customers", json=body)
    assert response.status_code == 201, response.json
    return response.json  # type: ignore[return-value]


def test_create_customer_as_api_key(org: Org) -> None:
    # X-Passkey from an API key proves nothing and must not be recorded as a passkey.
    response = org.call(
        "POST",
        "/customers",
        json={
            "email": "Ada@Example.com",
            "name": "Ada",
            "tax_id": "DE123456789",
            "metadata": {"plan": "free"},
        },
        headers={"X-Passkey": "1"},
    )
    assert response.status_code == 201, response.json
    customer = response.json
    request_id = response.headers["X-Request-ID"]
    assert len(request_id) == 32

    entry = only(audit_rows(org.app, action="customer.create"))
    assert entry["feature"] == "customer"
    assert entry["operation"] == "create"
    assert entry["entity_type"] == "customer"
    assert entry["entity_id"] == customer["id"]
    assert entry["actor_type"] == "api_key"
    assert entry["actor_id"] == org.key.id
    assert entry["actor_label"] == org.key.prefix == org.secret[:12]
    assert entry["actor_label"].startswith("sk_live_")
    assert entry["tenant_id"] == org.org_id
    assert entry["request_id"] == request_id
    assert entry["passkey"] is False
    assert entry["ip"] == "127.0.0.1"
    assert entry["user_agent"] == UA
    assert entry["before"] is None
    assert entry["after"] == {
        "id": customer["id"],
        "org_id": org.org_id,
        "email": "ada@example.com",
        "name": "Ada",
        "tax_id": "[REDACTED]",
        "metadata_": {"plan": "free"},
    }

    # The same entry through the app's own audit endpoint.
    recent = org.call("GET", "/audit/recent?limit=5", as_="user").json["data"]
    assert recent[0]["action"] == "customer.create"
    assert recent[0]["request_id"] == request_id
    assert recent[0]["after"]["tax_id"] == "[REDACTED]"
    assert recent[0]["occurred_at"].endswith("Z")


def test_update_as_user_with_passkey_records_only_changes(org: Org) -> None:
    customer = new_customer(org, metadata={"plan": "free", "region": "eu"})
    response = org.call(
        "PATCH",
        f"/customers/{customer['id']}",
        as_="user",
        headers={"X-Passkey": "1"},
        json={
            "email": "ada@example.com",  # unchanged: must not appear
            "name": "Ada Lovelace",
            "tax_id": "DE999999999",
            "metadata": {"plan": "pro"},
        },
    )
    assert response.status_code == 200, response.json

    entry = only(audit_rows(org.app, action="customer.update"))
    assert entry["actor_type"] == "user"
    assert entry["actor_id"] == org.user.id
    assert entry["actor_label"] == org.user.email
    assert entry["passkey"] is True
    assert entry["tenant_id"] == org.org_id
    assert entry["request_id"] == response.headers["X-Request-ID"]
    assert entry["entity_id"] == customer["id"]
    assert entry["before"] == {
        "name": "Ada",
        "tax_id": "[REDACTED]",
        "metadata_": {"plan": "free"},
    }
    assert entry["after"] == {
        "name": "Ada Lovelace",
        "tax_id": "[REDACTED, changed]",  # changed; its value never stored
        "metadata_": {"plan": "pro"},
    }


def test_user_without_passkey_header_is_not_passkey(org: Org) -> None:
    customer = new_customer(org)
    org.call("PATCH", f"/customers/{customer['id']}", as_="user", json={"name": "A."})
    entry = only(audit_rows(org.app, action="customer.update"))
    assert entry["actor_type"] == "user"
    assert entry["passkey"] is False


def test_update_that_changes_nothing_writes_nothing(org: Org) -> None:
    customer = new_customer(org)
    response = org.call(
        "PATCH", f"/customers/{customer['id']}", json={"name": "Ada", "email": "ada@example.com"}
    )
    assert response.status_code == 200
    assert audit_rows(org.app, action="customer.update") == []


def test_refund_writes_update_and_event_with_one_request_id(org: Org) -> None:
    customer = new_customer(org)
    created = org.call(
        "POST",
        "/payments",
        json={
            "customer": customer["id"],
            "amount": "12.5",
            "currency": "USD",
            "source": "tok_visa",
        },
    )
    assert created.status_code == 201, created.json
    payment = created.json
    assert payment["amount"] == "12.50"
    assert payment["status"] == "succeeded"
    # Inserted as pending before the charge, then marked succeeded: two entries.
    creation = audit_rows(org.app, request_id=created.headers["X-Request-ID"])
    assert [e["action"] for e in creation] == ["payment.create", "payment.update"]
    assert creation[0]["after"]["amount"] == "12.50"  # exact, never a float
    assert creation[0]["after"]["status"] == "pending"
    assert creation[1]["after"] == {"status": "succeeded"}

    response = org.call(
        "POST",
        f"/payments/{payment['id']}/refund",
        as_="user",
        json={"reason": "requested_by_customer"},
        headers={"X-Request-ID": "req_refund-0001"},
    )
    assert response.status_code == 200, response.json
    assert response.headers["X-Request-ID"] == "req_refund-0001"
    assert response.json["status"] == "refunded"

    rows = audit_rows(org.app, request_id="req_refund-0001")
    assert [e["action"] for e in rows] == ["payment.update", "payment.refund"]
    update, refund = rows
    assert update["before"] == {"amount_refunded": "0.00", "status": "succeeded"}
    assert update["after"] == {"amount_refunded": "12.50", "status": "refunded"}
    assert refund["feature"] == "payment"
    assert refund["operation"] == "refund"
    assert refund["metadata"] == {
        "amount": "12.50",
        "currency": "usd",
        "reason": "requested_by_customer",
    }
    for entry in rows:
        assert (entry["entity_type"], entry["entity_id"]) == ("payment", payment["id"])
        assert (entry["actor_type"], entry["actor_id"]) == ("user", org.user.id)
        assert entry["tenant_id"] == org.org_id

    # Nothing left to refund: rejected before any change, so nothing is logged.
    again = org.call("POST", f"/payments/{payment['id']}/refund", json={})
    assert again.status_code == 409
    assert audit_rows(org.app, request_id=again.headers["X-Request-ID"]) == []


def test_partial_refunds(org: Org) -> None:
    customer = new_customer(org)
    payment = org.call(
        "POST",
        "/payments",
        json={"customer": customer["id"], "amount": "10.00", "currency": "eur", "source": "tok"},
    ).json
    first = org.call("POST", f"/payments/{payment['id']}/refund", json={"amount": "2.50"})
    assert first.json["status"] == "partially_refunded"
    too_much = org.call("POST", f"/payments/{payment['id']}/refund", json={"amount": "7.51"})
    assert too_much.status_code == 400
    rest = org.call("POST", f"/payments/{payment['id']}/refund", json={})
    assert rest.json["status"] == "refunded"

    refunds = audit_rows(org.app, action="payment.refund")
    assert [e["metadata"]["amount"] for e in refunds] == ["2.50", "7.50"]
    updates = audit_rows(org.app, request_id=rest.headers["X-Request-ID"], action="payment.update")
    assert only(updates)["before"] == {"amount_refunded": "2.50", "status": "partially_refunded"}


def test_delete_records_the_full_row(org: Org) -> None:
    customer = new_customer(org, metadata={"plan": "free"})
    response = org.call("DELETE", f"/customers/{customer['id']}", as_="user")
    assert response.status_code == 200, response.json

    created = only(audit_rows(org.app, action="customer.create"))
    deleted = only(audit_rows(org.app, action="customer.delete"))
    assert deleted["before"] == created["after"]
    assert deleted["before"]["tax_id"] == "[REDACTED]"
    assert deleted["after"] is None
    assert deleted["entity_id"] == customer["id"]
    assert deleted["actor_type"] == "user"
    assert deleted["request_id"] == response.headers["X-Request-ID"]
    assert org.call("GET", f"/customers/{customer['id']}").status_code == 404


def test_declined_payment_rolls_back_the_change_and_its_entry(org: Org) -> None:
    customer = new_customer(org)
    count = len(audit_rows(org.app))
    # The payment row is flushed (and its entry written) before the charge;
    # the decline then rolls both back.
    response = org.call(
        "POST",
        "/payments",
        json={
            "customer": customer["id"],
            "amount": "99.00",
            "currency": "usd",
            "source": "tok_chargeDeclined",
        },
    )
    assert response.status_code == 402
    assert response.json["error"]["type"] == "card_declined"
    assert len(audit_rows(org.app)) == count
    assert audit_rows(org.app, request_id=response.headers["X-Request-ID"]) == []
    with org.app.extensions["payments.engine"].connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(Payment)) == 0


def test_customer_with_payments_cannot_be_deleted(org: Org) -> None:
    customer = new_customer(org)
    org.call(
        "POST",
        "/payments",
        json={"customer": customer["id"], "amount": "1.00", "currency": "usd", "source": "tok"},
    )
    response = org.call("DELETE", f"/customers/{customer['id']}")
    assert response.status_code == 409
    assert audit_rows(org.app, action="customer.delete") == []


@pytest.mark.parametrize(
    ("headers", "cookies"),
    [
        ({}, {}),
        ({"Authorization": "Bearer sk_live_not-a-real-key"}, {}),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, {}),
        ({}, {"session": "usr_forged.0000"}),
    ],
    ids=["nothing", "unknown-key", "basic", "forged-cookie"],
)
def test_unauthenticated_requests_are_rejected(
    org: Org, headers: dict[str, str], cookies: dict[str, str]
) -> None:
    count = len(audit_rows(org.app))
    response = org.call(
        "POST", "/customers", as_="nobody", headers=headers, cookies=cookies, json={"email": "a@b"}
    )
    assert response.status_code == 401
    assert response.json["error"]["type"] == "unauthenticated"
    assert len(audit_rows(org.app)) == count


def test_validation_error_before_any_change_writes_nothing(org: Org) -> None:
    count = len(audit_rows(org.app))
    response = org.call("POST", "/customers", json={"email": "not-an-email"})
    assert response.status_code == 400
    assert len(audit_rows(org.app)) == count


def test_audit_endpoint_is_scoped_to_the_tenant(app: Flask, org: Org) -> None:
    other = make_org(app, "globex")
    new_customer(org)
    new_customer(other, email="hank@globex.example")
    mine = org.call("GET", "/audit/recent").json["data"]
    theirs = other.call("GET", "/audit/recent").json["data"]
    assert {e["tenant_id"] for e in mine} == {org.org_id}
    assert {e["tenant_id"] for e in theirs} == {other.org_id}
    # Newest first, and key creation (by the seed job) is in there too.
    assert [e["action"] for e in mine] == ["customer.create", "api_key.create"]
    assert mine[1]["actor_type"] == "system"
    assert mine[1]["actor_id"] == "test-seed"
    assert mine[1]["after"]["secret_hash"] == "[REDACTED]"
    # A customer of another tenant is invisible, not merely forbidden.
    their_customer = only(audit_rows(app, tenant_id=other.org_id, action="customer.create"))
    assert org.call("GET", f"/customers/{their_customer['entity_id']}").status_code == 404


def test_client_ip_only_from_trusted_proxy(org: Org) -> None:
    # The default trusted proxy is one on the same host (the test client's 127.0.0.1).
    behind_proxy = org.call(
        "POST",
        "/customers",
        json={"email": "p@example.com"},
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    # A client connecting directly cannot claim another address.
    direct = org.call(
        "POST",
        "/customers",
        json={"email": "d@example.com"},
        headers={"X-Forwarded-For": "203.0.113.9"},
        environ={"REMOTE_ADDR": "198.51.100.7"},
    )
    ip = {e["request_id"]: e["ip"] for e in audit_rows(org.app, action="customer.create")}
    assert ip[behind_proxy.headers["X-Request-ID"]] == "203.0.113.9"
    assert ip[direct.headers["X-Request-ID"]] == "198.51.100.7"


def test_credentials_never_reach_the_audit_table(org: Org) -> None:
    customer = new_customer(org)
    org.call("PATCH", f"/customers/{customer['id']}", as_="user", json={"name": "Ada L."})
    payment = org.call(
        "POST",
        "/payments",
        json={"customer": customer["id"], "amount": "3.00", "currency": "usd", "source": "tok"},
        as_="user",
    ).json
    org.call("POST", f"/payments/{payment['id']}/refund", json={})
    other = new_customer(org, email="x@example.com")
    org.call("DELETE", f"/customers/{other['id']}", as_="user")

    rows = audit_rows(org.app)
    assert {r["actor_type"] for r in rows} == {"system", "api_key", "user"}
    dump = repr(rows) + json.dumps(rows, default=str)
    signature = org.cookie.rpartition(".")[2]
    for secret in (
        f"Bearer {org.secret}",
        org.secret,
        org.secret[12:],  # the part of the key beyond the label
        org.cookie,
        signature,
        org.app.config["SESSION_SIGNING_KEY"],
        org.key.secret_hash,
        "DE123456789",  # the redacted tax id
    ):
        assert secret not in dump
