"""NDJSON batches POSTed over HTTPS, signed (see :mod:`whodid.stream.signing`)."""

from __future__ import annotations

import http.client
import ipaddress
import ssl
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from whodid.errors import ConfigurationError, DeliveryError
from whodid.stream import signing
from whodid.stream.destination import Batch

USER_AGENT = "whodid-stream/1"
_MAX_ANSWER = 1 << 16


class HTTPDestination:
    """POST each batch to ``url`` as ``application/x-ndjson``, signed with ``secrets``.

    A 2xx answer means delivered; anything else (or no answer within
    ``timeout``) is a :class:`~whodid.errors.DeliveryError` and the relay sends
    the batch again, signed afresh. The receiver checks the
    ``Whodid-Signature`` header with :func:`whodid.stream.verify_signature`
    and drops entries whose ``id`` it already has (a batch can arrive twice
    after a crash).

    Args:
        url: ``https://...``; plain ``http://`` only to a loopback address.
        secrets: the HMAC secret, or two while rotating (both sign).
        ca: a CA bundle (PEM file) to trust instead of the system's.
        timeout: seconds to wait for the server.
        headers: extra request headers (e.g. an ``Authorization``).

    Example:
        >>> auditor.stream(HTTPDestination("https://siem.example/whodid", secrets=[SECRET]))
    """

    def __init__(
        self,
        url: str,
        secrets: Sequence[str],
        *,
        ca: str | None = None,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigurationError(f"an HTTP destination needs an https:// URL, got {url!r}")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ConfigurationError(
                f"{url} would send the audit log unencrypted: use https:// "
                "(plain http:// is allowed only to 127.0.0.1, ::1 or localhost)"
            )
        if parts.username or parts.password:
            raise ConfigurationError("put credentials in headers=, not in the URL (it is logged)")
        signing.check_secrets(secrets)
        self.secrets = list(secrets)
        self.name = f"{parts.scheme}://{parts.netloc}{parts.path}"
        self.url, self.timeout = url, timeout
        self._host, self._port = parts.hostname, parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._context: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._context = ssl.create_default_context(cafile=ca)
        self._headers = dict(headers or {})
        self._conn: http.client.HTTPConnection | None = None

    def send(self, batch: Batch) -> None:
        body = batch.body
        headers = {
            **self._headers,
            "Content-Type": "application/x-ndjson",
            "User-Agent": USER_AGENT,
            signing.HEADER: signing.sign(body, self.secrets),
        }
        try:
            conn = self._connection()
            conn.request("POST", self._path, body=body, headers=headers)
            response = conn.getresponse()
            detail = response.read(_MAX_ANSWER)
            if response.will_close or not response.isclosed():
                # An answer longer than we read would be taken for the next one's.
                self.close()
        except (OSError, http.client.HTTPException) as exc:
            self.close()  # a half-used connection cannot be trusted for the next try
            raise DeliveryError(f"POST {self.name} failed: {exc!r}") from exc
        if not 200 <= response.status < 300:
            text = detail.decode("utf-8", "replace").strip()
            raise DeliveryError(f"POST {self.name} answered {response.status}: {text[:200]}")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._context is not None:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.timeout, context=self._context
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self.timeout
                )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
