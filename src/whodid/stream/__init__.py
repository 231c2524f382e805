"""Log streams: every committed entry shipped to a SIEM, a file or a collector.

A :class:`Relay` reads what committed after its stored position and sends it
to one destination: NDJSON to a file or stdout, signed NDJSON batches over
HTTPS, or RFC 5424 syslog over TCP or TLS. Run it with ``whodid stream --to
URL`` or embed it with ``auditor.stream(url, ...)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import unquote, urlsplit

from whodid.errors import ConfigurationError
from whodid.stream.destination import Batch, Destination
from whodid.stream.files import FileDestination, StdoutDestination
from whodid.stream.http import HTTPDestination
from whodid.stream.relay import Relay, StreamFilter
from whodid.stream.signing import HEADER as SIGNATURE_HEADER
from whodid.stream.signing import sign as sign_batch
from whodid.stream.signing import verify as verify_signature
from whodid.stream.syslog import SyslogDestination

__all__ = [
    "SIGNATURE_HEADER",
    "Batch",
    "Destination",
    "FileDestination",
    "HTTPDestination",
    "Relay",
    "StdoutDestination",
    "StreamFilter",
    "SyslogDestination",
    "destination_for",
    "sign_batch",
    "verify_signature",
]

#: The destination URLs :func:`destination_for` understands.
SCHEMES = "https://, http:// (loopback only), syslog+tcp://, syslog+tls://, file://, a path, or -"


def destination_for(
    url: str,
    *,
    secrets: Sequence[str] = (),
    ca: str | None = None,
    max_bytes: int = 0,
    backups: int = 5,
    headers: Mapping[str, str] | None = None,
) -> Destination:
    """The destination a URL names.

    Args:
        url: ``https://host/path`` (signed POSTs; needs ``secrets``),
            ``syslog+tls://host:6514``, ``syslog+tcp://host:601``,
            ``file:///var/log/audit.ndjson`` or a plain path, ``-`` for stdout.
        secrets: the HMAC secret(s) of an HTTPS destination.
        ca: a CA bundle to trust (HTTPS, syslog over TLS).
        max_bytes, backups: rotation of a file destination.
        headers: extra headers of an HTTPS destination.

    Example:
        >>> destination_for("syslog+tls://siem.internal:6514", ca="/etc/ssl/siem-ca.pem")
    """
    if secrets and not url.lower().startswith(("https://", "http://")):
        raise ConfigurationError(f"secrets are for HTTPS destinations; {url!r} would not use them")
    if url in ("-", "stdout:", "stdout://"):
        return StdoutDestination()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("https", "http"):
        if not secrets:
            raise ConfigurationError(
                "an HTTPS destination needs a signing secret (--secret or WHODID_STREAM_SECRET)"
            )
        return HTTPDestination(url, secrets, ca=ca, headers=headers)
    if scheme in ("syslog+tcp", "syslog+tls"):
        tls = scheme == "syslog+tls"
        if not parts.hostname:
            raise ConfigurationError(f"{url!r} names no host, e.g. {scheme}://siem.internal:6514")
        port = parts.port or (6514 if tls else 601)
        return SyslogDestination(parts.hostname, port, tls=tls, ca=ca)
    if scheme == "file":
        return FileDestination(unquote(parts.path), max_bytes=max_bytes, backups=backups)
    if not scheme or (len(scheme) == 1 and url[1:3] in (":\\", ":/")):
        return FileDestination(url, max_bytes=max_bytes, backups=backups)
    raise ConfigurationError(f"cannot stream to {url!r}: use {SCHEMES}")
