"""Syslog (RFC 5424) over TCP or TLS, octet-counted as RFC 5425 and RFC 6587 frame it.

Each entry is one message: the entry's time as TIMESTAMP, its action as MSGID,
its id, seq and tenant as structured data, and its NDJSON line as MSG::

    <110>1 2026-12-05T10:00:00.123456Z web-1 whodid - payment.refunded
        [whodid@32473 id="log_01J..." seq="42" tenant="org_acme"] {"id":"log_01J...",...}

Syslog has no acknowledgement: a batch counts as sent once the kernel took
it. A receiver that crashes before writing it loses what it had buffered.
"""

from __future__ import annotations

import re
import socket
import ssl
from typing import Any

from whodid.entry.fields import COLUMNS, iso
from whodid.errors import ConfigurationError, DeliveryError
from whodid.stream.destination import Batch

#: Facility 13 is "log audit" (RFC 5424, table 1).
LOG_AUDIT = 13
#: Severity 6, informational.
INFO = 6
#: RFC 5612's enterprise number for documentation; SD-ID of whodid's parameters.
SD_ID = "whodid@32473"

_ID, _SEQ, _TENANT, _ACTION, _AT = (
    COLUMNS.index(n) for n in ("id", "seq", "tenant_id", "action", "occurred_at")
)
# PRINTUSASCII minus space; MSGID and HOSTNAME allow nothing else.
_NOT_PRINTABLE = re.compile(r"[^\x21-\x7e]")
_SD_ESCAPE = re.compile(r'(["\\\]])')


def header_name(text: str, limit: int) -> str:
    """``text`` as a header field: printable ASCII, no spaces, at most ``limit``."""
    cleaned = _NOT_PRINTABLE.sub("_", text)[:limit]
    return cleaned or "-"


def message(
    row: tuple[Any, ...],
    line: str,
    *,
    hostname: str,
    app_name: str = "whodid",
    facility: int = LOG_AUDIT,
) -> bytes:
    """One entry as an RFC 5424 message (without its frame)."""
    values = {"id": row[_ID], "seq": row[_SEQ], "tenant": row[_TENANT]}
    # Every value escaped: an id or tenant is whatever the app wrote.
    params = " ".join(f'{k}="{_sd_value(v)}"' for k, v in values.items() if v is not None)
    head = (
        f"<{facility * 8 + INFO}>1 {iso(row[_AT])} {hostname} {app_name} - "
        f"{header_name(str(row[_ACTION]), 32)} [{SD_ID} {params}] "
    )
    return (head + line.rstrip("\n")).encode("utf-8", "surrogatepass")


def _sd_value(value: Any) -> str:
    """A PARAM-VALUE: '"', '\\' and ']' escaped with a backslash (RFC 5424 6.3.3)."""
    return _SD_ESCAPE.sub(r"\\\1", str(value))


def frame(message: bytes) -> bytes:
    """``MSG-LEN SP SYSLOG-MSG`` (RFC 5425 section 4.3)."""
    return b"%d " % len(message) + message


class SyslogDestination:
    """Send each entry as an RFC 5424 message to a syslog server over TCP or TLS.

    Args:
        host, port: the server (rsyslog, syslog-ng, a SIEM's collector).
        tls: TLS as RFC 5425 (port 6514 by convention); the server's
            certificate is checked against ``ca`` or the system's CAs.
        ca: a CA bundle (PEM file) to trust.
        facility: the syslog facility (13, "log audit", by default).
        hostname: HOSTNAME of the messages (this machine's name by default).

    Example:
        >>> auditor.stream(SyslogDestination("siem.internal", 6514, tls=True, ca="ca.pem"))
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: bool = False,
        ca: str | None = None,
        facility: int = LOG_AUDIT,
        hostname: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not 0 <= facility <= 23:
            raise ConfigurationError(f"a syslog facility is 0 to 23, got {facility}")
        if ca is not None and not tls:
            raise ConfigurationError("ca= is for TLS: use syslog+tls:// (or tls=True)")
        self.host, self.port, self.tls = host, port, tls
        self.facility, self.timeout = facility, timeout
        self.hostname = header_name(hostname or socket.gethostname(), 255)
        self.name = f"syslog+{'tls' if tls else 'tcp'}://{host}:{port}"
        self._context = ssl.create_default_context(cafile=ca) if tls else None
        self._sock: socket.socket | None = None

    def send(self, batch: Batch) -> None:
        data = b"".join(
            frame(message(row, line, hostname=self.hostname, facility=self.facility))
            for row, line in zip(batch.rows, batch.lines, strict=True)
        )
        try:
            self._socket().sendall(data)
        except OSError as exc:
            self.close()
            raise DeliveryError(f"sending to {self.name} failed: {exc!r}") from exc

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            if self._context is not None:
                try:
                    sock = self._context.wrap_socket(sock, server_hostname=self.host)
                except OSError:
                    sock.close()
                    raise
            self._sock = sock
        elif _closed_by_peer(self._sock, self.timeout):
            # A server that hung up makes the next send succeed into nothing: reconnect first.
            self.close()
            return self._socket()
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Whether the server has closed the connection (it never sends us anything)."""
    sock.setblocking(False)
    try:
        # SSL sockets take no flags; a byte read there is one the server should not send.
        data = sock.recv(1) if isinstance(sock, ssl.SSLSocket) else sock.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)
    return data == b""
