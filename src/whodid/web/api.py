"""The JSON endpoints of the audit log, as a Starlette app."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from whodid.auditor import Auditor
from whodid.context import Actor
from whodid.errors import InvalidQuery
from whodid.export import formats as _export
from whodid.tenancy import ALL_TENANTS
from whodid.web.dashboard import Dashboard, static_assets
from whodid.web.openapi import openapi_document

log = logging.getLogger("whodid.web")

READ_ROLES = frozenset({"owner", "admin"})
# Query parameter -> Filters field. Anything else is refused, so a typo never
# silently widens a query.
FILTER_PARAMS = {
    "action": "action",
    "feature": "feature",
    "operation": "operation",
    "actor_type": "actor_type",
    "actor_id": "actor_id",
    "user_id": "user_id",
    "api_key_id": "api_key_id",
    "entity_type": "entity_type",
    "entity_id": "entity_id",
    "request_id": "request_id",
    "ip": "ip",
    "q": "q",
    "start_date": "start",
    "end_date": "end",
}
#: Filters field -> query parameter, for error messages in the caller's words.
LABELS = {name: param for param, name in FILTER_PARAMS.items() if name != param}
PAGE_PARAMS = ("limit", "cursor")
EXPORT_CHUNK = 500


@dataclass(frozen=True)
class Viewer:
    """Who is reading the log: their tenant and role (and, optionally, actor).

    ``tenant_id`` is the tenant whose entries they read, or ``whodid.ALL_TENANTS``
    in a single-tenant app; a viewer with no tenant is refused.
    """

    tenant_id: Any
    role: str
    actor: Actor | None = None


Authorize = Callable[[Request], Any]  # -> viewer or None, or an awaitable of one


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _field(viewer: Any, name: str) -> Any:
    return viewer.get(name) if isinstance(viewer, dict) else getattr(viewer, name, None)


class AuditAPI:
    def __init__(self, auditor: Auditor, authorize: Authorize) -> None:
        if not callable(authorize):
            raise TypeError("audit_app(authorize=...) must be a callable taking the request")
        self.auditor = auditor
        self.authorize = authorize

    async def viewer(self, request: Request) -> Any:
        viewer = self.authorize(request)
        if inspect.isawaitable(viewer):
            viewer = await viewer
        if viewer is None:
            raise _Refused(error(401, "unauthenticated", "sign in to read the audit log"))
        if _field(viewer, "role") not in READ_ROLES:
            raise _Refused(error(403, "forbidden", "only owners and admins can read the audit log"))
        tenant = _field(viewer, "tenant_id")
        if not (isinstance(tenant, str) and tenant) and tenant is not ALL_TENANTS:
            # None would read as "the entries with no tenant": every tenantless
            # entry to whoever authorize() forgot to scope. Refuse, and say why.
            log.error("audit_app authorize() returned a viewer with tenant_id=%r", tenant)
            raise _Refused(
                error(
                    403,
                    "forbidden",
                    "the viewer names no tenant: authorize() must return a tenant_id, or "
                    "whodid.ALL_TENANTS for a single-tenant app",
                )
            )
        return viewer

    def filters(self, request: Request, viewer: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
        params = request.query_params
        unknown = sorted(set(params) - set(FILTER_PARAMS) - set(allowed))
        if unknown:
            raise InvalidQuery(
                f"unknown parameter {', '.join(unknown)}; "
                f"known: {', '.join([*FILTER_PARAMS, *allowed])}"
            )
        # Every parameter but action takes one value: a repeated one is refused
        # rather than silently read as its first or last occurrence.
        for param in (*FILTER_PARAMS, *allowed):
            count = len(params.getlist(param))
            if count > 1 and param != "action":
                raise InvalidQuery(f"{param} was given {count} times; give it once")
        given: dict[str, Any] = {"tenant_id": _field(viewer, "tenant_id")}
        for param, name in FILTER_PARAMS.items():
            values = params.getlist(param)
            if not values:
                continue
            if param == "action":
                given[name] = [a for v in values for a in v.split(",") if a]
            else:
                given[name] = values[0]
        return given

    # -- endpoints -------------------------------------------------------------

    async def list(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        given = self.filters(request, viewer, PAGE_PARAMS)
        raw_limit = request.query_params.get("limit", "50")
        try:
            limit = int(raw_limit)
        except ValueError:
            raise InvalidQuery(
                f"limit must be an integer from 1 to 200, got {raw_limit[:20]!r}"
            ) from None
        cursor = request.query_params.get("cursor")
        page = await run_in_threadpool(
            lambda: self.auditor.list(limit=limit, cursor=cursor, labels=LABELS, **given)
        )
        return JSONResponse(
            {"data": [e.to_dict() for e in page.entries], "next_cursor": page.next_cursor}
        )

    async def actions(self, request: Request) -> Response:
        """The action names of the viewer's log, for the dashboard's filter."""
        viewer = await self.viewer(request)
        _no_params(request)
        tenant = _field(viewer, "tenant_id")
        names = await run_in_threadpool(lambda: self.auditor.actions(tenant_id=tenant))
        return JSONResponse({"data": names})

    async def proof(self, request: Request) -> Response:
        """An entry's proof bundle: checkable offline with the log's public key."""
        return await self._entry(request, self._proof)

    async def detail(self, request: Request) -> Response:
        return await self._entry(request, self._detail)

    def _proof(self, entry_id: str, tenant: Any) -> dict[str, Any] | None:
        return self.auditor.prove(entry_id, tenant_id=tenant)

    def _detail(self, entry_id: str, tenant: Any) -> dict[str, Any] | None:
        entry = self.auditor.get(entry_id, tenant_id=tenant)
        if entry is None:
            return None
        related = self.auditor.related(entry_id, tenant_id=tenant)
        return {**entry.to_dict(), "related": [e.to_dict() for e in related]}

    async def _entry(
        self, request: Request, read: Callable[[str, Any], dict[str, Any] | None]
    ) -> Response:
        """One entry's answer for the viewer's tenant; 404 for another tenant's id."""
        viewer = await self.viewer(request)
        _no_params(request)
        entry_id = request.path_params["entry_id"]
        tenant = _field(viewer, "tenant_id")
        found = await run_in_threadpool(read, entry_id, tenant)
        if found is None:
            return error(404, "not_found", f"no audit log entry {entry_id[:40]!r}")
        return JSONResponse(found)

    async def export(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        format = request.path_params["format"]
        if format not in _export.FORMATS:
            return error(404, "not_found", "exports are export.csv or export.ndjson")
        given = self.filters(request, viewer, ())
        actor = _field(viewer, "actor")
        # Checks the filters (a 400 before streaming starts) and records the start;
        # the end (completed, abandoned by the client, failed) is recorded too.
        chunks = await run_in_threadpool(
            lambda: self.auditor.iter_export(
                format,
                actor=actor if isinstance(actor, Actor) else None,
                lines_per_chunk=EXPORT_CHUNK,
                labels=LABELS,
                **given,
            )
        )
        return StreamingResponse(
            chunks,
            media_type=_export.MEDIA_TYPES[format],
            headers={"Content-Disposition": f'attachment; filename="audit-log.{format}"'},
        )

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document(str(request.base_url).rstrip("/")))


def _no_params(request: Request) -> None:
    if request.query_params:
        names = ", ".join(sorted(set(request.query_params)))
        raise InvalidQuery(f"unknown parameter {names}; this endpoint takes none")


async def _invalid(request: Request, exc: Exception) -> Response:
    return error(400, "invalid_request", str(exc))


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _Refused)
    return exc.response


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))


async def _crash(request: Request, exc: Exception) -> Response:
    log.exception("audit log API failed")
    return error(500, "internal_error", "the audit log could not answer; see the server log")


def audit_app(auditor: Auditor, *, authorize: Authorize, timezone: str = "UTC") -> Starlette:
    """A Starlette app serving the audit log's JSON API and dashboard; mount it anywhere.

    ``timezone`` (an IANA name) is the workspace default the dashboard shows
    times in; exports are always UTC.
    """
    api = AuditAPI(auditor, authorize)
    dashboard = Dashboard(default_timezone=timezone)
    routes = [
        # The page itself is public: it holds no data, and must load to explain a 401/403.
        Route("/", dashboard.page),
        Mount("/static", app=static_assets(), name="static"),
        Route("/audit-logs", api.list),
        # Before {entry_id}, which would otherwise take "actions" for an id.
        Route("/audit-logs/actions", api.actions),
        Route("/audit-logs/export.{format}", api.export),
        Route("/audit-logs/{entry_id}/proof", api.proof),
        Route("/audit-logs/{entry_id}", api.detail),
        Route("/openapi.json", api.openapi),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={
            InvalidQuery: _invalid,
            _Refused: _refused,
            HTTPException: _http,
            Exception: _crash,
        },
    )
