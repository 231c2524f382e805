"""Write-time enrichment of audit entries: the country of the client IP and what the client was.

Both lookups run on every audited request, on input that anyone on the internet controls (the
peer address, ``X-Forwarded-For``, ``User-Agent``). So they never raise, bound the work they do
on hostile input, and cache their answers: a handful of addresses and user agents make up most
traffic.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from whodid.errors import ConfigurationError

if TYPE_CHECKING:
    import geoip2.database
    import geoip2.models

# geoip2 and user_agents (ua-parser compiles its regexes on import) are imported on first
# use: most processes that import whodid never enrich an entry.

__all__ = ["Enricher", "default_enricher"]

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The longest real textual address (IPv6 with an embedded IPv4 and a zone id) is well under
# this; anything longer is garbage, and refusing it early keeps hostile headers cheap.
_MAX_IP_LENGTH: Final = 64

# ua-parser tries on the order of a thousand regexes, several of them backtracking; on a 100 KB
# header that takes seconds. Real user agents stay far below 512 characters.
_MAX_USER_AGENT_LENGTH: Final = 512
_USER_AGENT_CACHE_SIZE: Final = 4096

_GEOIP_HINT: Final = (
    "download GeoLite2-Country.mmdb (or GeoLite2-City.mmdb) from MaxMind and pass its path"
)


class Enricher:
    """Looks up the country of an IP address and describes a client from its User-Agent.

    Safe to share between threads: the MaxMind reader only reads, and the caches are
    ``functools.lru_cache``, which guards its own bookkeeping.
    """

    def __init__(
        self,
        geoip_db: str | os.PathLike[str] | None = None,
        *,
        cache_size: int = 65536,
    ) -> None:
        """Open ``geoip_db`` (a MaxMind Country or City ``.mmdb``) if one is given.

        Without a database :meth:`country` always returns ``None``; :meth:`client` works either
        way. ``cache_size`` bounds how many IP lookups are remembered; 0 turns the cache off.

        Raises :class:`~whodid.errors.ConfigurationError` if the file is missing, is not a
        MaxMind database, or holds something other than Country or City data. Failing here, at
        start-up, beats silently storing no country on every entry.
        """
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ConfigurationError(
                f"cache_size must be an int >= 0 (0 disables the cache), got {cache_size!r}"
            )
        self._reader: geoip2.database.Reader | None = None
        self._query: Callable[[_IPAddress], geoip2.models.Country] | None = None
        self._country_cached = functools.lru_cache(maxsize=cache_size)(self._country_uncached)
        if geoip_db is not None:
            self._reader, self._query = _open_geoip(geoip_db)

    def country(self, ip: str | None) -> str | None:
        """Return the ISO 3166-1 alpha-2 code (``"DE"``) of where ``ip`` is, or ``None``.

        ``ip`` must be a bare address (no port, no brackets). ``None`` comes back when no
        database is configured, the address is malformed or not globally routable (private,
        loopback, link-local, multicast, reserved: no database can place those), the database
        does not know it, or the lookup fails for any reason. Never raises.
        """
        if self._query is None:
            return None
        address = _global_address(ip)
        if address is None:
            return None
        try:
            return self._country_cached(address)
        except Exception:
            # Audit writes must not fail because of enrichment. Errors escape the cache on
            # purpose, so a transient failure (say, a closed reader) is not remembered.
            return None

    def client(self, user_agent: str | None) -> dict[str, object] | None:
        """Describe the client that sent ``user_agent``.

        Returns ``{"browser": "Chrome 120.0.6099", "os": "Mac OS X 10.15.7", "device": "Mac",
        "is_bot": False, "is_mobile": False, "is_tablet": False, "is_pc": True}``. Names are
        ua-parser's, so an unrecognised part reads ``"Other"``. Only the first 512 characters
        are looked at.

        Returns ``None`` for a missing or blank header, and also if the parser fails: a dict of
        ``None`` fields would claim "parsed, nothing found", which is not what happened. Never
        raises. Each call returns a fresh dict, so callers may change it.
        """
        return _client(user_agent)

    def close(self) -> None:
        """Close the GeoIP database; :meth:`country` returns ``None`` afterwards. Idempotent."""
        reader, self._reader, self._query = self._reader, None, None
        self._country_cached.cache_clear()
        if reader is not None:
            reader.close()

    def __enter__(self) -> Enricher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _country_uncached(self, address: _IPAddress) -> str | None:
        query = self._query
        if query is None:
            raise RuntimeError("the GeoIP database is closed")
        import geoip2.errors

        try:
            return query(address).country.iso_code
        except geoip2.errors.AddressNotFoundError:
            # A definite answer, so it belongs in the cache as much as a hit does.
            return None


def _open_geoip(
    geoip_db: str | os.PathLike[str],
) -> tuple[geoip2.database.Reader, Callable[[_IPAddress], geoip2.models.Country]]:
    import geoip2.database
    import maxminddb

    path = os.fspath(geoip_db)
    if not os.path.exists(path):
        raise ConfigurationError(f"geoip_db {path!r} does not exist; {_GEOIP_HINT}")
    if not os.path.isfile(path):
        raise ConfigurationError(f"geoip_db {path!r} is not a file; {_GEOIP_HINT}")
    try:
        reader = geoip2.database.Reader(path, mode=geoip2.database.MODE_AUTO)
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise ConfigurationError(
            f"geoip_db {path!r} is not a readable MaxMind database ({exc}); {_GEOIP_HINT}"
        ) from exc

    database_type = reader.metadata().database_type
    query: Callable[[_IPAddress], geoip2.models.Country]
    # Substring tests, as geoip2 itself does: this also accepts GeoIP2-City-Europe, DBIP-City-Lite
    # and the like, which share the record layout.
    if "City" in database_type:
        query = reader.city
    elif "Country" in database_type:
        query = reader.country
    else:
        reader.close()
        raise ConfigurationError(
            f"geoip_db {path!r} is a {database_type!r} database, which has no country data; "
            f"{_GEOIP_HINT}"
        )
    return reader, query


def _global_address(ip: str | None) -> _IPAddress | None:
    """Parse ``ip`` into a globally routable address, or ``None``."""
    if not isinstance(ip, str) or len(ip) > _MAX_IP_LENGTH:
        return None
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 client reaching a dual-stack socket shows up as ::ffff:a.b.c.d; judge (and
        # look up) the IPv4 address it carries, since only that is in the IPv4 part of the tree.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            address = embedded
        elif address.scope_id is not None:
            # The zone id names a local interface; it is meaningless to the database and would
            # split one address into several cache entries.
            address = ipaddress.IPv6Address(address.packed)
    # ipaddress counts multicast as global, but multicast is never a client's source address.
    if not address.is_global or address.is_multicast:
        return None
    return address


def _client(user_agent: str | None) -> dict[str, object] | None:
    if not isinstance(user_agent, str):
        return None
    # Truncate before caching too: the cache then holds at most 4096 * 512 characters, and
    # user agents differing only past the cut share an entry.
    parsed = _parse_user_agent(user_agent[:_MAX_USER_AGENT_LENGTH])
    return None if parsed is None else dict(parsed)


# Module-level rather than per Enricher: parsing does not depend on the instance, so every
# Enricher in the process shares one cache.
@functools.lru_cache(maxsize=_USER_AGENT_CACHE_SIZE)
def _parse_user_agent(user_agent: str) -> tuple[tuple[str, object], ...] | None:
    # A tuple, not a dict: cached values are shared between callers and must not be mutable.
    if not user_agent.strip():
        return None
    import user_agents

    try:
        ua = user_agents.parse(user_agent)
        return (
            ("browser", _label(ua.browser.family, ua.browser.version_string)),
            ("os", _label(ua.os.family, ua.os.version_string)),
            ("device", ua.device.family if isinstance(ua.device.family, str) else None),
            ("is_bot", bool(ua.is_bot)),
            ("is_mobile", bool(ua.is_mobile)),
            ("is_tablet", bool(ua.is_tablet)),
            ("is_pc", bool(ua.is_pc)),
        )
    except Exception:
        # Caching the failure too, so a poisonous header is parsed once, not on every request.
        return None


def _label(family: object, version: object) -> str | None:
    if not isinstance(family, str) or not family:
        return None
    if isinstance(version, str) and version:
        return f"{family} {version}"
    return family


_default: Enricher | None = None
_default_lock = threading.Lock()


def default_enricher() -> Enricher:
    """Return the process-wide :class:`Enricher`, which has no GeoIP database.

    For callers that only need :meth:`Enricher.client`; it always returns the same instance.
    """
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Enricher()
    return _default
