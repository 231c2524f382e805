"""Exceptions raised by whodid. Every message says what to do next."""


class WhodidError(Exception):
    """Base class of every error whodid raises on purpose."""


class ConfigurationError(WhodidError, ValueError):
    """whodid was set up wrongly; raised at start-up, before any request runs."""


class InvalidQuery(WhodidError, ValueError):
    """A filter, cursor or date range of a query cannot be used as given."""


class CrossTenantWrite(WhodidError):
    """A change to one tenant's row was made in another tenant's context, and the
    Auditor was told to refuse those (``Auditor(cross_tenant="refuse")``)."""
