"""Choices for the dashboard's filters: GET /audit-logs/actions.

Kept apart from :mod:`whodid.web.api` (which wires it in) so the list of
filters the page can offer never depends on what one page of results holds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from whodid import query as _query
from whodid.auditor import Auditor
from whodid.schema import entries

# A workspace has tens of event names, not thousands; the cap only bounds the
# answer if an application puts ids into action names by mistake.
MAX_ACTIONS = 1000


def distinct_actions(auditor: Auditor, tenant_id: Any) -> list[str]:
    """Every action name the tenant's log holds, sorted (at most MAX_ACTIONS)."""
    c = entries.c
    stmt = (
        sa.select(c.action)
        .where(*_query.Filters(tenant_id=tenant_id).conditions())
        .distinct()
        .order_by(c.action)
        .limit(MAX_ACTIONS)
    )
    with _query.connect(auditor._bind()) as conn:
        return [str(action) for action in conn.execute(stmt).scalars()]


class Facets:
    """Endpoints reading the viewer the same way the JSON API does.

    ``viewer`` is the API's check (it raises to refuse the request) and
    ``tenant_of`` reads the tenant from the viewer it returns.
    """

    def __init__(
        self,
        auditor: Auditor,
        *,
        viewer: Callable[[Request], Awaitable[Any]],
        tenant_of: Callable[[Any], Any],
    ) -> None:
        self.auditor = auditor
        self.viewer = viewer
        self.tenant_of = tenant_of

    async def actions(self, request: Request) -> Response:
        tenant = self.tenant_of(await self.viewer(request))
        names = await run_in_threadpool(distinct_actions, self.auditor, tenant)
        return JSONResponse({"data": names})
