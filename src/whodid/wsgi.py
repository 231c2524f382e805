"""``from whodid.wsgi import WSGIAuditMiddleware``: see :mod:`whodid.capture.wsgi`."""

from whodid.capture.wsgi import WSGIAuditMiddleware

__all__ = ["WSGIAuditMiddleware"]
