"""The FastAPI example driven over HTTP, on SQLite and PostgreSQL, in process and under uvicorn.

Every assertion is about the rows in ``whodid_entries``: who they name (the
actor set from a sync dependency in a worker thread, or from an async one),
what they say changed, and what they must never contain.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from examples.fastapi_app import DEMO_API_KEY, OTHER_API_KEY, create_app, sign_session
from fastapi import FastAPI

from support.models import read_entries
from support.pgserver import with_driver
from whodid import Entry
from whodid.store.schema import entries

KEY = {"Authorization": f"Bearer {DEMO_API_KEY}"}
OTHER_KEY = {"Authorization": f"Bearer {OTHER_API_KEY}"}
HEX32 = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def as_user(user_id: str = "usr_ada", *, passkey: bool = False) -> dict[str, str]:
    headers = {"Cookie": f"session={sign_session(user_id)}"}
    if passkey:
        headers["X-Passkey"] = "1"
    return headers


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient

    async def entries(self) -> list[Entry]:
        async with self.app.state.engine.connect() as conn:
            return await conn.run_sync(read_entries)  # type: ignore[no-any-return]

    async def raw_rows(self) -> list[dict[str, Any]]:
        async with self.app.state.engine.connect() as conn:
            result = await conn.execute(sa.select(entries).order_by(entries.c.seq))
            return [dict(row) for row in result.mappings()]

    async def customer(self, headers: dict[str, str] = KEY, **fields: Any) -> str:
        body = {"email": "ada@example.com", "name": "Ada", **fields}
        r = await self.client.post("/customers", json=body, headers=headers)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def payment(self, customer_id: str, amount: str = "10.10", **fields: Any) -> str:
        body = {"customer_id": customer_id, "amount": amount, "currency": "EUR", **fields}
        r = await self.client.post("/payments", json=body, headers=KEY)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


@asynccontextmanager
async def running(url: str, client: tuple[str, int] = ("127.0.0.1", 50123)) -> AsyncIterator[Api]:
    app = create_app(url)
    # ASGITransport does not send lifespan events; run the app's own lifespan
    # (table creation, engine disposal) around the client.
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield Api(app, http)


@pytest.fixture
async def api(async_db_url: str) -> AsyncIterator[Api]:
    async with running(async_db_url) as api:
        yield api


# -- attribution -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_create_as_api_key_is_attributed_from_the_sync_threadpool_dependency(api: Api):
    r = await api.client.post(
        "/customers",
        json={
            "email": "ada@example.com",
            "name": "Ada",
            "tax_id": "DE123456789",
            "metadata": {"plan": {"tier": "free"}},
        },
        headers={**KEY, "X-Request-ID": "req-create-1", "User-Agent": "billing-cron/2.1"},
    )
    assert r.status_code == 201, r.text
    assert r.headers.get_list("x-request-id") == ["req-create-1"]
    cid = r.json()["id"]
    assert cid.startswith("cus_")

    [e] = await api.entries()
    assert (e.action, e.feature, e.operation) == ("customer.create", "customer", "create")
    assert (e.entity_type, e.entity_id) == ("customer", cid)
    # set_actor() ran in a worker thread under a copied context; the ORM hook,
    # back in the request's task, still sees it.
    assert (e.actor_type, e.actor_id, e.actor_label) == ("api_key", "key_demo", "sk_live_demo")
    assert e.passkey is False
    assert e.tenant_id == "acct_demo"
    assert e.request_id == "req-create-1"
    assert e.ip == "127.0.0.1"
    assert e.user_agent == "billing-cron/2.1"
    assert e.before is None
    assert e.after == {
        "id": cid,
        "account_id": "acct_demo",
        "email": "ada@example.com",
        "name": "Ada",
        "tax_id": "[REDACTED]",
        "metadata_": {"plan": {"tier": "free"}},
    }
    assert e.verify_digest()


@pytest.mark.anyio
async def test_update_as_user_with_passkey_records_only_changed_fields(api: Api):
    cid = await api.customer(
        tax_id="DE1", metadata={"plan": {"tier": "free", "seats": 3}, "src": "import"}
    )
    r = await api.client.patch(
        f"/customers/{cid}",
        json={
            "email": "ada@example.com",  # unchanged: must not appear
            "name": "Ada Lovelace",
            "tax_id": "DE2",
            "metadata": {"plan": {"tier": "pro", "seats": 3}, "src": "import"},
        },
        headers=as_user("usr_ada", passkey=True),
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Ada Lovelace"

    _, e = await api.entries()
    assert e.action == "customer.update"
    assert (e.actor_type, e.actor_id, e.actor_label) == ("user", "usr_ada", "ada@example.com")
    assert e.passkey is True
    assert e.tenant_id == "acct_demo"
    assert e.before == {
        "name": "Ada",
        "tax_id": "[REDACTED]",
        "metadata_": {"plan": {"tier": "free"}},
    }
    assert e.after == {
        "name": "Ada Lovelace",
        "tax_id": "[REDACTED, changed]",  # changed; its value never stored
        "metadata_": {"plan": {"tier": "pro"}},
    }
    assert e.request_id == r.headers["x-request-id"]
    assert HEX32.fullmatch(e.request_id)

    # Without the passkey header: same user, passkey false.
    r = await api.client.patch(f"/customers/{cid}", json={"name": "A. L."}, headers=as_user())
    assert r.status_code == 200
    *_, e = await api.entries()
    assert (e.actor_id, e.passkey, e.after) == ("usr_ada", False, {"name": "A. L."})

    # A PATCH that changes nothing writes nothing.
    count = len(await api.entries())
    r = await api.client.patch(f"/customers/{cid}", json={"name": "A. L."}, headers=as_user())
    assert r.status_code == 200
    assert len(await api.entries()) == count


@pytest.mark.anyio
async def test_refund_writes_the_row_change_and_the_event_under_one_request_id(api: Api):
    cid = await api.customer()
    pid = await api.payment(cid, "10.10")
    r = await api.client.post(
        f"/payments/{pid}/refund",
        json={"amount": "4.00", "reason": "requested_by_customer"},
        headers={**KEY, "X-Request-ID": "rfd-2026-03-01:7f3a"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "partial"
    assert r.headers.get_list("x-request-id") == ["rfd-2026-03-01:7f3a"]

    found = [e for e in await api.entries() if e.request_id == "rfd-2026-03-01:7f3a"]
    assert [e.action for e in found] == ["payment.update", "payment.refund"]
    update, refund = found
    assert (update.entity_type, update.entity_id) == ("payment", pid)
    assert update.before == {"amount_refunded": "0.00", "status": "succeeded"}
    assert update.after == {"amount_refunded": "4.00", "status": "partial"}
    assert (refund.feature, refund.operation) == ("payment", "refund")
    assert (refund.entity_type, refund.entity_id) == ("payment", pid)
    assert refund.metadata == {
        "amount": "4.00",
        "currency": "EUR",
        "reason": "requested_by_customer",
    }
    for e in found:
        assert (e.actor_type, e.actor_id, e.tenant_id) == ("api_key", "key_demo", "acct_demo")

    # The rest, with a request id the middleware must not accept.
    r = await api.client.post(
        f"/payments/{pid}/refund", json={}, headers={**KEY, "X-Request-ID": "<script>x</script>"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "refunded"
    rid = r.headers["x-request-id"]
    assert HEX32.fullmatch(rid)
    *_, update, refund = await api.entries()
    assert update.request_id == refund.request_id == rid
    assert update.after == {"amount_refunded": "10.10", "status": "refunded"}
    assert refund.metadata["amount"] == "6.10"


@pytest.mark.anyio
async def test_delete_records_the_full_row_before(api: Api):
    cid = await api.customer(tax_id="DE1", metadata={"k": [1, 2]})
    r = await api.client.delete(f"/customers/{cid}", headers=as_user())
    assert r.status_code == 204, r.text

    _, e = await api.entries()
    assert (e.action, e.entity_id, e.actor_id) == ("customer.delete", cid, "usr_ada")
    assert e.after is None
    assert e.before == {
        "id": cid,
        "account_id": "acct_demo",
        "email": "ada@example.com",
        "name": "Ada",
        "tax_id": "[REDACTED]",
        "metadata_": {"k": [1, 2]},
    }
    assert e.request_id == r.headers["x-request-id"]


@pytest.mark.anyio
async def test_a_request_that_fails_after_changing_rows_writes_no_entry(api: Api):
    cid = await api.customer()
    pid = await api.payment(cid, "5.00")
    before = await api.raw_rows()

    # The payment row is flushed (and its entry inserted) before the charge is
    # declined; the rollback must take the entry with it.
    r = await api.client.post(
        "/payments",
        json={
            "customer_id": cid,
            "amount": "99.00",
            "currency": "EUR",
            "source": "tok_chargeDeclined",
        },
        headers=KEY,
    )
    assert r.status_code == 402
    # Nothing flushed here, but a refused refund must not leave an event either.
    r = await api.client.post(f"/payments/{pid}/refund", json={"amount": "6.00"}, headers=KEY)
    assert r.status_code == 422
    # Nor a refused delete (the customer has a payment).
    r = await api.client.delete(f"/customers/{cid}", headers=KEY)
    assert r.status_code == 409

    assert await api.raw_rows() == before
    async with api.app.state.engine.connect() as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM payments")) == 1


@pytest.mark.anyio
async def test_unauthenticated_requests_are_refused_and_write_nothing(api: Api):
    body = {"email": "mallory@example.com"}
    forged = f"session=usr_ada.{'0' * 64}"
    for headers in (
        {},
        {"Authorization": "Bearer sk_live_not_a_key"},
        {"Authorization": f"Basic {DEMO_API_KEY}"},
        {"Cookie": forged},
        {"Cookie": "session=usr_ada"},
    ):
        r = await api.client.post("/customers", json=body, headers=headers)
        assert r.status_code == 401, headers
    assert await api.entries() == []


@pytest.mark.anyio
async def test_credentials_appear_nowhere_in_the_log(api: Api):
    cookie = sign_session("usr_ada")
    cid = await api.customer()
    await api.client.patch(f"/customers/{cid}", json={"name": "x"}, headers=as_user(passkey=True))
    pid = await api.payment(cid)
    await api.client.post(f"/payments/{pid}/refund", json={"amount": "1.00"}, headers=as_user())
    other = await api.customer()
    await api.client.delete(f"/customers/{other}", headers=as_user())

    rows = await api.raw_rows()
    assert {r["action"] for r in rows} == {
        "customer.create",
        "customer.update",
        "customer.delete",
        "payment.create",
        "payment.update",
        "payment.refund",
    }
    dump = json.dumps(rows, default=str)
    for secret in (
        KEY["Authorization"],
        DEMO_API_KEY,
        DEMO_API_KEY.removeprefix("sk_live_demo_"),
        cookie,
        cookie.partition(".")[2],  # the HMAC
        "Bearer",
    ):
        assert secret not in dump, secret


@pytest.mark.anyio
async def test_audit_recent_lists_the_callers_tenant_newest_first(api: Api):
    cid = await api.customer()
    await api.client.patch(f"/customers/{cid}", json={"name": "B"}, headers=as_user())
    await api.customer(headers=OTHER_KEY, email="eve@example.com")

    r = await api.client.get("/audit/recent", headers=KEY)
    assert r.status_code == 200, r.text
    listed = r.json()
    assert [e["action"] for e in listed] == ["customer.update", "customer.create"]
    assert {e["tenant_id"] for e in listed} == {"acct_demo"}
    stored = {e.id: e for e in await api.entries()}
    for item in listed:
        assert item == stored[item["id"]].to_dict()
        assert item["occurred_at"].endswith("Z")

    r = await api.client.get("/audit/recent?limit=1", headers=OTHER_KEY)
    [only] = r.json()
    assert (only["tenant_id"], only["actor_id"]) == ("acct_other", "key_other")
    assert only["after"]["email"] == "eve@example.com"


@pytest.mark.anyio
async def test_forwarded_for_is_believed_only_from_the_trusted_loopback_proxy(async_db_url: str):
    spoof = {**KEY, "X-Forwarded-For": "198.51.100.23"}
    async with running(async_db_url) as api:
        await api.customer(headers=spoof)
        [e] = await api.entries()
        assert e.ip == "198.51.100.23"
    # Same database, a client that is not a proxy: its header is ignored.
    async with running(async_db_url, client=("203.0.113.10", 40000)) as api:
        await api.customer(headers=spoof)
        _, e = await api.entries()
        assert e.ip == "203.0.113.10"


@pytest.mark.anyio
async def test_concurrent_requests_keep_their_own_actors(api: Api):
    async def create(i: int) -> tuple[str, str]:
        headers = KEY if i % 2 else as_user("usr_ada", passkey=i % 4 == 0)
        r = await api.client.post(
            "/customers", json={"email": f"c{i}@example.com"}, headers=headers
        )
        assert r.status_code == 201, r.text
        return r.json()["id"], r.headers["x-request-id"]

    results = await asyncio.gather(*(create(i) for i in range(12)))
    by_id = {e.entity_id: e for e in await api.entries()}
    assert len(by_id) == 12
    for i, (cid, rid) in enumerate(results):
        e = by_id[cid]
        assert e.after["email"] == f"c{i}@example.com"
        assert e.request_id == rid
        if i % 2:
            assert (e.actor_type, e.actor_id, e.passkey) == ("api_key", "key_demo", False)
        else:
            assert (e.actor_type, e.actor_id, e.passkey) == ("user", "usr_ada", i % 4 == 0)


@pytest.mark.anyio
@pytest.mark.postgres
async def test_asyncpg_driver(pg_url: str):
    async with running(with_driver(pg_url, "asyncpg")) as api:
        assert api.app.state.engine.dialect.driver == "asyncpg"
        cid = await api.customer(metadata={"a": {"b": 1}})
        r = await api.client.patch(
            f"/customers/{cid}", json={"metadata": {"a": {"b": 2}}}, headers=as_user(passkey=True)
        )
        assert r.status_code == 200
        pid = await api.payment(cid, "1234567890.12")
        r = await api.client.post(
            f"/payments/{pid}/refund",
            json={"amount": "0.12"},
            headers={**KEY, "X-Request-ID": "pg-1"},
        )
        assert r.status_code == 200, r.text
        found = await api.entries()
    assert [e.action for e in found] == [
        "customer.create",
        "customer.update",
        "payment.create",
        "payment.update",
        "payment.refund",
    ]
    _, update, payment, refund_update, refund = found
    assert update.before == {"metadata_": {"a": {"b": 1}}}
    assert update.after == {"metadata_": {"a": {"b": 2}}}
    assert (update.actor_id, update.passkey) == ("usr_ada", True)
    assert payment.after["amount"] == "1234567890.12"
    assert refund_update.request_id == refund.request_id == "pg-1"
    assert all(e.verify_digest() for e in found)


# -- under a real server ---------------------------------------------------------------------


def test_under_a_real_uvicorn_server(sqlite_url: str):
    app = create_app(with_driver(sqlite_url, "aiosqlite"))
    # Bind first and hand uvicorn the socket: no window in which another
    # process could take a "free" port between choosing and listening.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # proxy_headers=False: the forwarding walk under test is whodid's, not uvicorn's.
    config = uvicorn.Config(app, log_level="warning", proxy_headers=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            assert thread.is_alive(), "uvicorn exited during start-up"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10, trust_env=False) as client:
            r = client.post(
                "/customers",
                json={"email": "ada@example.com"},
                headers={**KEY, "X-Request-ID": "uvicorn-1"},
            )
            assert r.status_code == 201, r.text
            assert r.headers.get_list("x-request-id") == ["uvicorn-1"]
            cid = r.json()["id"]
            r = client.patch(f"/customers/{cid}", json={"name": "Ada"}, headers=as_user())
            assert r.status_code == 200, r.text
            patch_rid = r.headers["x-request-id"]
            # The peer (127.0.0.1) is a trusted proxy, so its header is believed.
            r = client.post(
                "/customers",
                json={"email": "bob@example.com"},
                headers={**KEY, "X-Forwarded-For": "198.51.100.7"},
            )
            assert r.status_code == 201, r.text
            r = client.get("/audit/recent", headers=KEY)
            assert [e["request_id"] for e in r.json()][1:] == [patch_rid, "uvicorn-1"]
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not shut down"

    engine = sa.create_engine(sqlite_url)
    try:
        created, updated, forwarded = read_entries(engine)
    finally:
        engine.dispose()
    assert (created.action, created.ip, created.request_id) == (
        "customer.create",
        "127.0.0.1",
        "uvicorn-1",
    )
    assert created.user_agent is not None and created.user_agent.startswith("python-httpx/")
    assert (updated.action, updated.ip, updated.request_id) == (
        "customer.update",
        "127.0.0.1",
        patch_rid,
    )
    assert updated.actor_id == "usr_ada"
    assert forwarded.ip == "198.51.100.7"
