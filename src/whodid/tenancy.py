"""Whose entries a reading method reads: always said, never assumed.

Every reading method of :class:`whodid.Auditor` takes ``tenant_id``: a
tenant's id, None for the entries written with no tenant, or
:data:`ALL_TENANTS` for trusted code reading every tenant. Leaving it out is
an error, so no caller reads every tenant by forgetting an argument.
"""

from __future__ import annotations

from typing import Any

from whodid.errors import InvalidQuery

__all__ = ["ALL_TENANTS", "TENANT_REQUIRED", "require_tenant"]


class _AllTenants:
    def __repr__(self) -> str:
        return "whodid.ALL_TENANTS"


#: ``tenant_id=ALL_TENANTS``: every tenant, said out loud.
ALL_TENANTS: Any = _AllTenants()

#: Default of every tenant_id parameter, so leaving it out is an error, not a choice.
TENANT_REQUIRED: Any = object()


def require_tenant(method: str, tenant_id: Any) -> Any:
    """``tenant_id`` if the caller chose one; else an error saying how to choose."""
    if tenant_id is TENANT_REQUIRED:
        raise InvalidQuery(
            f"{method}() needs tenant_id=: a tenant's id, None for the entries written with "
            "no tenant, or whodid.ALL_TENANTS to read every tenant"
        )
    return tenant_id
