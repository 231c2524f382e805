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


class DeliveryError(WhodidError):
    """A log stream's destination did not take a batch; the relay retries it."""


class InvalidSignature(WhodidError):
    """A log stream's batch arrived unsigned, signed with another secret, or too late."""
