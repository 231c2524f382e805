"""The audit log over HTTP: a JSON API (and the dashboard page) to mount in your app.

    app.mount("/audit", audit_app(auditor, authorize=viewer_of))

``authorize(request)`` (sync or async) returns the viewer, any object or
mapping with ``tenant_id`` and ``role``, or None for an anonymous request.
Only ``owner`` and ``admin`` may read; every query is scoped to the viewer's
tenant.
"""

from whodid.web.api import Viewer, audit_app

__all__ = ["Viewer", "audit_app"]
