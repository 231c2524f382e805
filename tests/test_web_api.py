"""The JSON HTTP API: roles, tenant scoping, errors, pages, detail and exports."""

from __future__ import annotations

import csv
import io
import json

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from support.entries import put
from whodid import Actor, Auditor
from whodid.web import Viewer, audit_app


def authorize(request):  # type: ignore[no-untyped-def]
    header = request.headers.get("x-viewer")
    if not header:
        return None
    tenant, _, role = header.partition(":")
    return Viewer(tenant_id=tenant, role=role, actor=Actor.user(f"{role}@{tenant}"))


OWNER = {"X-Viewer": "org_1:owner"}
ADMIN2 = {"X-Viewer": "org_2:admin"}


@pytest.fixture
def auditor(engine: sa.Engine) -> Auditor:
    auditor = Auditor(engine)
    auditor.create_all()
    for i in range(5):
        put(
            auditor,
            days_ago=1 - i / 10,
            action="customer.update",
            entity=("customer", f"cus_{i}"),
            request_id="req_same",
        )
    put(auditor, tenant="org_2", action="payment.refund", entity=("payment", "pay_9"))
    return auditor


@pytest.fixture
def client(auditor: Auditor) -> TestClient:
    return TestClient(audit_app(auditor, authorize=authorize))


def test_only_owners_and_admins_of_the_tenant_read(client):
    assert client.get("/audit-logs").status_code == 401
    r = client.get("/audit-logs", headers={"X-Viewer": "org_1:member"})
    assert r.status_code == 403
    assert r.json() == {
        "error": {"code": "forbidden", "message": "only owners and admins can read the audit log"}
    }
    assert {e["tenant_id"] for e in client.get("/audit-logs", headers=OWNER).json()["data"]} == {
        "org_1"
    }
    assert [e["action"] for e in client.get("/audit-logs", headers=ADMIN2).json()["data"]] == [
        "payment.refund"
    ]


def test_pages_through_the_cursor(client):
    first = client.get("/audit-logs?limit=2", headers=OWNER).json()
    assert len(first["data"]) == 2 and first["next_cursor"]
    ids = [e["id"] for e in first["data"]]
    cursor = first["next_cursor"]
    while cursor:
        page = client.get("/audit-logs", params={"limit": 2, "cursor": cursor}, headers=OWNER)
        ids += [e["id"] for e in page.json()["data"]]
        cursor = page.json()["next_cursor"]
    assert len(ids) == len(set(ids)) == 5
    assert all(e["occurred_at"].endswith("Z") for e in first["data"])


def test_filters_from_query_parameters(client):
    r = client.get("/audit-logs", params={"entity_id": "cus_3"}, headers=OWNER)
    assert [e["entity_id"] for e in r.json()["data"]] == ["cus_3"]
    r = client.get("/audit-logs?action=customer.update,payment.refund&q=cus_1", headers=OWNER)
    assert [e["entity_id"] for e in r.json()["data"]] == ["cus_1"]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=ten",
        "actor_type=robot",
        "start_date=yesterday",
        "start_date=2026-03-02&end_date=2026-03-01",
        "start_date=2020-01-01&end_date=2026-01-01",
        "cursor=garbage",
        "colour=red",
        "feature=a&feature=b",
        "entity_id=" + "x" * 500,
    ],
)
def test_bad_parameters_are_400_with_a_message(client, query):
    r = client.get(f"/audit-logs?{query}", headers=OWNER)
    assert r.status_code == 400
    body = r.json()
    assert body["error"]["code"] == "invalid_request" and body["error"]["message"]


def test_foreign_cursor_is_400(client):
    cursor = client.get("/audit-logs?limit=1", headers=OWNER).json()["next_cursor"]
    r = client.get("/audit-logs", params={"cursor": cursor}, headers=ADMIN2)
    assert r.status_code == 400


def test_detail_with_related_and_404_across_tenants(client):
    entry = client.get("/audit-logs?limit=1", headers=OWNER).json()["data"][0]
    r = client.get(f"/audit-logs/{entry['id']}", headers=OWNER)
    assert r.status_code == 200
    assert r.json()["id"] == entry["id"]
    assert len(r.json()["related"]) == 4  # same request id
    r = client.get(f"/audit-logs/{entry['id']}", headers=ADMIN2)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert client.get("/audit-logs/log_unknown", headers=OWNER).status_code == 404


def test_csv_export_streams_every_match_and_is_itself_audited(client, auditor):
    r = client.get("/audit-logs/export.csv?feature=customer", headers=OWNER)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 5 and {row["tenant_id"] for row in rows} == {"org_1"}
    ended, started = auditor.list(tenant_id="org_1", action="audit_log.export").entries
    chain, upto = started.metadata["chain_id"], started.metadata["upto_seq"]
    common = {"format": "csv", "filters": {"tenant_id": "org_1", "feature": "customer"}}
    assert started.metadata == {**common, "status": "started", "chain_id": chain, "upto_seq": upto}
    assert ended.metadata == {
        **common,
        "status": "completed",
        "rows": 5,
        "chain_id": chain,
        "upto_seq": upto,
    }
    for export in (started, ended):
        assert (export.actor_type, export.actor_id) == ("user", "owner@org_1")
    assert [e.id for e in auditor.related(started.id, tenant_id="org_1")] == [ended.id]


def test_ndjson_export(client):
    r = client.get("/audit-logs/export.ndjson", headers=ADMIN2)
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert [e["action"] for e in lines] == ["payment.refund"]
    assert client.get("/audit-logs/export.xml", headers=ADMIN2).status_code == 404
    assert client.get("/audit-logs/export.csv?limit=5", headers=ADMIN2).status_code == 400


def test_openapi_document_describes_the_api(client):
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) >= {
        "/audit-logs",
        "/audit-logs/export.csv",
        "/audit-logs/export.ndjson",
        "/audit-logs/{entry_id}",
    }


def test_async_authorize_and_unknown_routes(auditor):
    async def authorize_async(request):  # type: ignore[no-untyped-def]
        return {"tenant_id": "org_1", "role": "admin"}

    client = TestClient(audit_app(auditor, authorize=authorize_async))
    assert client.get("/audit-logs").status_code == 200
    r = client.get("/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert client.post("/audit-logs").status_code == 405
