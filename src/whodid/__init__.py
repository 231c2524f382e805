"""whodid: who did what, when, from where, for Python web apps.

auditor = Auditor(engine)
auditor.create_all()
auditor.instrument(Session)

@auditor.track(feature="customer")
class Customer(Base): ...

app.add_middleware(AuditMiddleware, actor=resolve_actor)
"""

from whodid.auditor import Auditor
from whodid.context import Actor, RequestContext, audit_context, current_context, set_actor
from whodid.entry import Entry
from whodid.errors import ConfigurationError, InvalidQuery, WhodidError
from whodid.query import ALL_TENANTS
from whodid.retention import Retention

__all__ = [
    "ALL_TENANTS",
    "Actor",
    "Auditor",
    "ConfigurationError",
    "Entry",
    "InvalidQuery",
    "RequestContext",
    "Retention",
    "WhodidError",
    "audit_context",
    "current_context",
    "set_actor",
]
__version__ = "0.1.0"
