"""What the ASGI and WSGI middlewares share: trusted proxies, request ids, headers.

Nothing here trusts the client. Forwarding headers are honoured only when the
peer is a configured proxy; request ids are checked against a small alphabet
and a length bound; header bytes of any encoding become bounded text.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from whodid.errors import ConfigurationError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID = 128
MAX_USER_AGENT = 1024
# Letters, digits and the punctuation real tracing systems use (UUIDs, ULIDs,
# AWS "Root=1-...", W3C-ish ids). Anything else could smuggle markup or log
# injection into the dashboard and exports.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=+/-]{0,127}")
_REQUEST_ID_BYTES = re.compile(_REQUEST_ID.pattern.encode("ascii"))
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _reseed() -> None:
    global _prefix, _prefix_bytes, _counter
    _prefix = os.urandom(10).hex()
    _prefix_bytes = _prefix.encode("ascii")
    _counter = itertools.count(int.from_bytes(os.urandom(3), "big"))


_prefix = ""
_prefix_bytes = b""
_counter = itertools.count()
_reseed()
# A forked worker must not repeat its parent's ids.
os.register_at_fork(after_in_child=_reseed)


def new_request_id() -> str:
    """32 hex characters: 80 random bits per process, then a counter.

    Unique without coordination like a uuid4, at a quarter of the cost, which
    matters because every request gets one.
    """
    return f"{_prefix}{next(_counter) & 0xFFFFFFFFFFFF:012x}"


def new_request_id_bytes() -> bytes:
    """:func:`new_request_id` as the ASCII bytes a header carries (no str made)."""
    return b"%b%012x" % (_prefix_bytes, next(_counter) & 0xFFFFFFFFFFFF)


def valid_request_id_bytes(value: bytes) -> bytes | None:
    """:func:`valid_request_id` on header bytes, without decoding them."""
    if value and len(value) <= MAX_REQUEST_ID and _REQUEST_ID_BYTES.fullmatch(value):
        return value
    return None


def valid_request_id(value: str | None) -> str | None:
    """``value`` if it is a usable request id, else None."""
    if value and len(value) <= MAX_REQUEST_ID and _REQUEST_ID.fullmatch(value):
        return value
    return None


def header_text(raw: bytes | str | None, limit: int = MAX_USER_AGENT) -> str | None:
    """Header bytes as printable text of at most ``limit`` characters, or None."""
    if not raw:
        return None
    if isinstance(raw, bytes):
        raw = raw[: limit * 4].decode("utf-8", "replace")
    text = _CONTROL.sub("", raw[:limit]).strip()
    return text or None


MAX_FORWARDED = 4096


def forwarding_chain(raw: bytes | None) -> str | None:
    """A forwarding header as text, keeping its *end* when it is too long.

    The hops a trusted proxy appended are at the end; the start is whatever
    the client wrote. Cutting the end off would let a client pad the header
    until its own forged hop is the last one left.
    """
    if raw and len(raw) > MAX_FORWARDED:
        # Drop the first, possibly partial, hop of the tail.
        raw = raw[-MAX_FORWARDED:].partition(b",")[2]
    return header_text(raw, MAX_FORWARDED)


def parse_networks(proxies: Iterable[str] | str | None) -> tuple[IPNetwork, ...]:
    """Parse ``trusted_proxies``; raises ConfigurationError naming the bad entry."""
    if proxies is None:
        return ()
    if isinstance(proxies, str):
        proxies = [proxies]
    networks = []
    for item in proxies:
        try:
            networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise ConfigurationError(
                f"trusted_proxies entry {item!r} is not an IP address or network; "
                "use forms like '10.0.0.0/8', '127.0.0.1' or '::1'"
            ) from None
    return tuple(networks)


def parse_ip(value: str | None) -> IPAddress | None:
    """An address from a peer or forwarding header (ports and brackets allowed)."""
    if not value:
        return None
    value = value.strip().strip('"')
    if value.startswith("["):  # "[2001:db8::1]:443"
        value = value[1 : value.find("]")] if "]" in value else ""
    elif value.count(":") == 1:  # "203.0.113.7:51000"
        value = value.split(":", 1)[0]
    if not value or len(value) > 45:
        return None
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _forwarded_for(header: str) -> list[str]:
    """The ``for=`` values of an RFC 7239 Forwarded header, in order."""
    hops = []
    for element in header.split(","):
        for pair in element.split(";"):
            name, _, value = pair.partition("=")
            if name.strip().lower() == "for":
                hops.append(value.strip())
    return hops


#: The forwarding headers a trusted proxy may be configured to write.
PROXY_HEADERS = ("x-forwarded-for", "forwarded")


@dataclass(frozen=True, slots=True)
class ProxyResolver:
    """Finds the client address behind a chain of trusted proxies.

    ``header`` is the one header the proxies write (nginx and AWS ALB append
    ``X-Forwarded-For``; RFC 7239 proxies write ``Forwarded``). It is
    configured, never guessed from the request: a proxy that appends one
    header passes the other through as the client wrote it.
    """

    trusted: tuple[IPNetwork, ...] = ()
    header: str = "x-forwarded-for"

    @classmethod
    def of(cls, trusted_proxies: Iterable[str] | str | None, header: str) -> ProxyResolver:
        """Check and build the resolver of a middleware's ``trusted_proxies`` / ``proxy_header``."""
        name = str(header).strip().lower()
        if name not in PROXY_HEADERS:
            raise ConfigurationError(
                f"proxy_header {header!r} is not one whodid reads; name the header your "
                f"proxies write: {' or '.join(PROXY_HEADERS)}"
            )
        return cls(parse_networks(trusted_proxies), name)

    def is_trusted(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self.trusted)

    def client_ip(self, peer: str | None, chain: str | None) -> str | None:
        """The client address, walking ``chain`` (the configured header) right to left.

        A hop is believed only if every hop to its right (and the peer) is a
        trusted proxy; the first untrusted hop is the client. Garbage in the
        chain stops the walk at the last address we could trust.
        """
        ip = parse_ip(peer)
        if ip is None:
            return None
        if not self.trusted or not self.is_trusted(ip) or not chain:
            return str(ip)
        hops = _forwarded_for(chain) if self.header == "forwarded" else chain.split(",")
        for raw in reversed(hops[-32:]):
            hop = parse_ip(raw)
            if hop is None:
                break
            ip = hop
            if not self.is_trusted(hop):
                break
        return str(ip)
