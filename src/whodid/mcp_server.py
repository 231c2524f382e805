"""The audit log as Model Context Protocol tools, for agents that ask it questions.

``whodid mcp --db URL --tenant T`` serves three tools over stdio (or streamable
HTTP with ``--http``, path ``/mcp``): ``query_audit_logs``, ``get_audit_log``
and ``list_actions``. The tenant and role come from the server's
configuration, never from a tool's arguments: over stdio from ``--tenant`` /
``--role``; over HTTP from the bearer token (``--token`` or
``WHODID_MCP_TOKEN``), which maps to one tenant and role; no token, 401. Every
read through a tool is itself recorded (``audit_log.query``, with the tool
and its filters). Needs the ``whodid[mcp]`` extra.
"""

from __future__ import annotations

import contextvars
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Annotated, Any

try:
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from pydantic import Field  # the SDK's own dependency
except ImportError as missing:  # pragma: no cover - the extra is not installed
    raise ImportError("whodid.mcp_server needs the MCP SDK: pip install 'whodid[mcp]'") from missing

from whodid.auditor import Auditor
from whodid.context import Actor
from whodid.errors import ConfigurationError, InvalidQuery
from whodid.store.query import ACTOR_TYPES, MAX_LIMIT

READ_ROLES = frozenset({"owner", "admin"})


@dataclass(frozen=True)
class Reader:
    """Whose log the tools read, and as what: set by configuration only."""

    tenant_id: Any
    role: str
    actor: Actor


# The reader of the current MCP request: the HTTP token's, or the stdio server's.
_READER: contextvars.ContextVar[Reader | None] = contextvars.ContextVar(
    "whodid_mcp_reader", default=None
)

_ACTION = "Dotted event names, e.g. customer.create, payment.refund (see list_actions)."
_ACTOR_TYPE = f"Kind of actor: {', '.join(ACTOR_TYPES)}."
_Q = "Free text over every detail field, before/after values included."
_END = "ISO 8601 end, inclusive; a date alone includes that whole UTC day."

INSTRUCTIONS = (
    "The audit log of one workspace: who did what, when and from where. Query it with "
    "query_audit_logs (newest first, cursor paging), open one entry with get_audit_log, "
    "and list the event names with list_actions. Times are UTC, ISO 8601."
)


def build(auditor: Auditor, default: Reader | None = None) -> MCPServer:
    """The MCP server over ``auditor``'s log; ``default`` reads over stdio."""
    server = MCPServer("whodid", instructions=INSTRUCTIONS)

    def reader() -> Reader:
        found = _READER.get() or default
        if found is None:
            raise ToolError("no reader configured for this MCP server")
        if found.role not in READ_ROLES:
            raise ToolError("only owners and admins can read the audit log")
        return found

    def recorded(tool: str, who: Reader, filters: dict[str, Any]) -> None:
        auditor.record(
            "audit_log.query",
            actor=who.actor,
            tenant_id=None if not isinstance(who.tenant_id, str) else who.tenant_id,
            metadata={"tool": tool, "filters": filters},
        )

    @server.tool(
        description=(
            "Search the audit log, newest first. Every filter is optional and they combine "
            "with AND. action: dotted event names such as customer.create or "
            "payment.refund (list_actions gives them); feature: area such as customer or "
            f"payout; operation: create, update, delete or another verb; actor_type: one "
            f"of {', '.join(ACTOR_TYPES)}; actor_id / user_id / api_key_id: who acted; "
            "entity_type and entity_id: the resource, e.g. payment and pay_123; request_id: "
            "every entry of one request; ip: the client address; q: free text over every "
            "detail field, before/after values included; start_date / end_date: ISO 8601, "
            "a date alone as end_date includes that day, at most 366 days apart. limit: "
            f"1 to {MAX_LIMIT}; cursor: next_cursor of the previous page."
        )
    )
    def query_audit_logs(
        action: Annotated[list[str] | None, Field(description=_ACTION)] = None,
        feature: Annotated[str | None, Field(description="Area, e.g. customer, payout.")] = None,
        operation: Annotated[str | None, Field(description="create, update, delete, ...")] = None,
        actor_type: Annotated[str | None, Field(description=_ACTOR_TYPE)] = None,
        actor_id: Annotated[
            str | None, Field(description="Who acted: user, key or job id.")
        ] = None,
        user_id: Annotated[str | None, Field(description="Entries by this user.")] = None,
        api_key_id: Annotated[str | None, Field(description="Entries by this API key.")] = None,
        entity_type: Annotated[str | None, Field(description="Resource type: payment.")] = None,
        entity_id: Annotated[str | None, Field(description="Resource id: pay_123.")] = None,
        request_id: Annotated[str | None, Field(description="Every entry of a request.")] = None,
        ip: Annotated[str | None, Field(description="Client IP address.")] = None,
        q: Annotated[str | None, Field(description=_Q)] = None,
        start_date: Annotated[str | None, Field(description="ISO 8601 start (UTC).")] = None,
        end_date: Annotated[str | None, Field(description=_END)] = None,
        limit: Annotated[int, Field(description=f"Page size, 1 to {MAX_LIMIT}.")] = 50,
        cursor: Annotated[str | None, Field(description="next_cursor of the last page.")] = None,
    ) -> dict[str, Any]:
        who = reader()
        given = {
            "action": action,
            "feature": feature,
            "operation": operation,
            "actor_type": actor_type,
            "actor_id": actor_id,
            "user_id": user_id,
            "api_key_id": api_key_id,
            "entity_type": entity_type,
            "entity_id": entity_id,
            "request_id": request_id,
            "ip": ip,
            "q": q,
            "start": start_date,
            "end": end_date,
        }
        filters = {k: v for k, v in given.items() if v not in (None, [], "")}
        try:
            page = auditor.list(
                tenant_id=who.tenant_id,
                limit=max(1, min(int(limit), MAX_LIMIT)),
                cursor=cursor,
                labels={"start": "start_date", "end": "end_date"},
                **filters,
            )
        except InvalidQuery as bad:  # the caller's mistake: say what to change
            raise ToolError(str(bad)) from None
        recorded("query_audit_logs", who, {k: v for k, v in filters.items()})
        return {"data": [e.to_dict() for e in page.entries], "next_cursor": page.next_cursor}

    @server.tool(
        description=(
            "One audit log entry by its id (log_...), with the entries of the same request "
            "or chain as related. Returns found: false for an id this workspace does not have."
        )
    )
    def get_audit_log(id: str) -> dict[str, Any]:
        who = reader()
        entry = auditor.get(id, tenant_id=who.tenant_id)
        recorded("get_audit_log", who, {"id": id[:64]})
        if entry is None:
            return {"found": False}
        related = auditor.related(id, tenant_id=who.tenant_id)
        return {"found": True, **entry.to_dict(), "related": [e.to_dict() for e in related]}

    @server.tool(description="Every event name (action) this workspace's log holds, sorted.")
    def list_actions() -> list[str]:
        who = reader()
        names = auditor.actions(tenant_id=who.tenant_id)
        recorded("list_actions", who, {})
        return names

    return server


Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


def bearer_app(app: ASGIApp, token: str, reader: Reader) -> ASGIApp:
    """``app`` behind a bearer token that maps to ``reader``; 401 without it."""
    if not token:
        raise ConfigurationError("--http needs --token or WHODID_MCP_TOKEN")
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if not hmac.compare_digest(given, expected):
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"www-authenticate", b'Bearer realm="whodid"'),
                    ],
                }
            )
            body = b'{"error": {"code": "unauthenticated", "message": "a bearer token is needed"}}'
            await send({"type": "http.response.body", "body": body})
            return
        marker = _READER.set(reader)
        try:
            await app(scope, receive, send)
        finally:
            _READER.reset(marker)

    return guarded
