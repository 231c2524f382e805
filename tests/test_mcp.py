"""The MCP server, driven by the MCP SDK's own client over stdio and streamable HTTP."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from typing import Any

import httpx
import pytest
import uvicorn
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

from support.entries import put
from support.pgserver import free_port
from whodid import ALL_TENANTS, Actor, Auditor
from whodid.mcp_server import Reader, bearer_app, build


@pytest.fixture
def log(sqlite_url: str) -> tuple[Auditor, str, str]:
    auditor = Auditor(sqlite_url)
    auditor.create_all()
    put(auditor, tenant="org_1", action="payment.refund", entity=("payment", "pay_1"))
    put(auditor, tenant="org_1", action="customer.update", entity=("customer", "cus_1"))
    put(auditor, tenant="org_2", action="wallet.freeze", entity=("wallet", "wal_9"))
    mine = auditor.list(tenant_id="org_1").entries[0].id
    theirs = auditor.list(tenant_id="org_2").entries[0].id
    return auditor, mine, theirs


def payload(result: Any) -> Any:
    if result.structured_content is not None:
        content = result.structured_content
        return content.get("result", content) if set(content) == {"result"} else content
    return json.loads(result.content[0].text)


async def exercise(session: ClientSession, mine: str, theirs: str) -> dict[str, Any]:
    """What a caller of tenant org_1 sees, trying every way to name org_2."""
    tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == {"query_audit_logs", "get_audit_log", "list_actions"}
    schema = tools["query_audit_logs"].input_schema
    assert "tenant_id" not in schema["properties"]
    assert "payment.refund" in (tools["query_audit_logs"].description or "")
    seen: dict[str, Any] = {}
    page = payload(await session.call_tool("query_audit_logs", {"action": ["payment.refund"]}))
    seen["refunds"] = [e["entity_id"] for e in page["data"]]
    everything = payload(await session.call_tool("query_audit_logs", {"limit": 500}))
    seen["tenants"] = {e["tenant_id"] for e in everything["data"]}
    hostile = [
        {"tenant_id": "org_2"},
        {"tenant": "org_2"},
        {"q": "org_2"},
        {"entity_id": "wal_9"},
    ]
    bad = await session.call_tool("query_audit_logs", {"end_date": "soon"})
    assert bad.is_error and "end_date 'soon' is not an ISO 8601" in bad.content[0].text
    for arguments in hostile:
        result = await session.call_tool("query_audit_logs", arguments)
        if not result.is_error:
            assert {e["tenant_id"] for e in payload(result)["data"]} <= {"org_1"}, arguments
    seen["mine"] = payload(await session.call_tool("get_audit_log", {"id": mine}))
    seen["theirs"] = payload(await session.call_tool("get_audit_log", {"id": theirs}))
    seen["actions"] = payload(await session.call_tool("list_actions", {}))
    return seen


def check(seen: dict[str, Any], auditor: Auditor) -> None:
    assert seen["refunds"] == ["pay_1"]
    assert seen["tenants"] == {"org_1"}
    assert seen["mine"]["found"] is True and seen["mine"]["tenant_id"] == "org_1"
    assert seen["theirs"] == {"found": False}
    assert "wallet.freeze" not in seen["actions"]
    reads = auditor.list(tenant_id="org_1", action="audit_log.query", limit=200).entries
    tools = {e.metadata["tool"] for e in reads}
    assert tools == {"query_audit_logs", "get_audit_log", "list_actions"}
    refund_read = [e for e in reads if e.metadata["filters"] == {"action": ["payment.refund"]}]
    assert refund_read and refund_read[0].actor_id == "whodid-mcp"
    assert auditor.list(tenant_id="org_2", action="audit_log.query").entries == []


def test_over_stdio_with_the_sdk_client(log):
    auditor, mine, theirs = log
    url = str(auditor.engine.url)  # type: ignore[union-attr]
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "whodid.cli", "mcp", "--db", url, "--tenant", "org_1"],
    )

    async def run() -> dict[str, Any]:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            return await exercise(session, mine, theirs)

    check(asyncio.run(run()), auditor)


def test_over_http_with_a_bearer_token(log):
    auditor, mine, theirs = log
    reader = Reader("org_1", "owner", Actor.system("whodid-mcp", label="http"))
    app = bearer_app(build(auditor).streamable_http_app(), "s3cret-token", reader)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        while not server.started:
            time.sleep(0.02)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            refused = httpx.post(
                url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=headers
            )
            assert refused.status_code == 401

        async def run() -> dict[str, Any]:
            client = create_mcp_http_client(headers={"Authorization": "Bearer s3cret-token"})
            async with (
                client,
                streamable_http_client(url, http_client=client) as streams,
                ClientSession(streams[0], streams[1]) as session,
            ):
                await session.initialize()
                return await exercise(session, mine, theirs)

        check(asyncio.run(run()), auditor)
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_member_reads_nothing(log):
    auditor, mine, _ = log
    server = build(auditor, Reader("org_1", "member", Actor.system("whodid-mcp")))

    async def run() -> Any:
        return await server.call_tool("get_audit_log", {"id": mine})

    with pytest.raises(Exception, match="only owners and admins"):
        asyncio.run(run())
    assert auditor.list(tenant_id=ALL_TENANTS, action="audit_log.query").entries == []
