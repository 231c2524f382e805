"""whodid: who did what, when, from where, for Python web apps.

auditor = Auditor(engine)
auditor.create_all()
auditor.instrument(Session)

@auditor.track(feature="customer")
class Customer(Base): ...

app.add_middleware(AuditMiddleware, actor=resolve_actor)
"""

from typing import TYPE_CHECKING, Any

from whodid.auditor import Auditor
from whodid.context import Actor, RequestContext, audit_context, current_context, set_actor
from whodid.entry.fields import Entry
from whodid.errors import ConfigurationError, InvalidQuery, WhodidError
from whodid.tenancy import ALL_TENANTS

if TYPE_CHECKING:
    from whodid.integrity.retention import Retention

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


def __getattr__(name: str) -> Any:
    # Retention loads with the purge machinery, on first use (PEP 562).
    if name == "Retention":
        from whodid.integrity.retention import Retention

        return Retention
    raise AttributeError(f"module 'whodid' has no attribute {name!r}")
