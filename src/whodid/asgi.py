"""``from whodid.asgi import AuditMiddleware``: see :mod:`whodid.capture.asgi`."""

from whodid.capture.asgi import AuditMiddleware

__all__ = ["AuditMiddleware"]
