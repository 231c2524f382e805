"""The dashboard page: one HTML shell, plus scripts and styles shipped in the package.

No build step and no network: the page is rendered from ``templates/`` and
everything it loads comes from ``static/`` beside this module. Every URL in
the page is relative, so ``audit_app`` works under any mount prefix (reached
with a trailing slash, which Starlette's router redirects to). The page holds
no data itself: its scripts read the JSON API as the signed-in viewer, so the
API's role checks and tenant scoping are the only ones there are.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
TEMPLATES_DIR = HERE / "templates"
PAGE_SIZE = 50

# The page runs only its own scripts and talks only to its own origin: an
# audit log renders strings that attackers choose (user agents, metadata), so
# an injection must find nothing to execute and nowhere to send what it reads.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Dashboard:
    """Serves the page; ``default_timezone`` is the workspace's (IANA name)."""

    def __init__(self, *, default_timezone: str = "UTC", page_size: int = PAGE_SIZE) -> None:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.template = env.get_template("dashboard.html")
        self.config: dict[str, Any] = {
            "defaultTimezone": default_timezone,
            "pageSize": page_size,
        }

    async def page(self, request: Request) -> Response:
        html = self.template.render(config=self.config)
        return HTMLResponse(html, headers=PAGE_HEADERS)


class StaticAssets(StaticFiles):
    """Package assets that browsers revalidate (cheaply, by ETag) on every load.

    The page's ES modules import each other by plain relative names, so they
    cannot carry version hashes; ``no-cache`` keeps an upgraded whodid from
    running a stale module beside a new page.
    """

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def static_assets() -> StaticAssets:
    return StaticAssets(directory=STATIC_DIR)
