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
from whodid.context import (
    Actor,
    RequestContext,
    audit_context,
    current_context,
    restore,
    set_actor,
    snapshot,
)
from whodid.entry.fields import Entry
from whodid.errors import ConfigurationError, InvalidQuery, WhodidError
from whodid.tenancy import ALL_TENANTS

if TYPE_CHECKING:
    from whodid.integrity.checkpoints import Checkpoint
    from whodid.integrity.ranges import Problem
    from whodid.integrity.retention import Purged, Retention
    from whodid.integrity.verify import Report
    from whodid.store.query import Page

__all__ = [
    "ALL_TENANTS",
    "Actor",
    "Auditor",
    "Checkpoint",
    "ConfigurationError",
    "Entry",
    "InvalidQuery",
    "Page",
    "Problem",
    "Purged",
    "Report",
    "RequestContext",
    "Retention",
    "WhodidError",
    "audit_context",
    "current_context",
    "restore",
    "set_actor",
    "snapshot",
]
__version__ = "0.1.0"


# The types the Auditor's reading, integrity and retention methods take and
# return, loaded with those parts on first use (PEP 562).
_LAZY = {
    "Checkpoint": "whodid.integrity.checkpoints",
    "Page": "whodid.store.query",
    "Problem": "whodid.integrity.ranges",
    "Purged": "whodid.integrity.retention",
    "Report": "whodid.integrity.verify",
    "Retention": "whodid.integrity.retention",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'whodid' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
