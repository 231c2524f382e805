"""Signing stream batches: HMAC-SHA256 over a timestamp and the body.

The header reads ``t=<unix seconds>,v1=<hex>[,v1=<hex>]``, as Stripe's webhooks
do: the timestamp is signed with the body, so a captured batch replayed later
than ``tolerance`` is refused, and a sender holding two secrets (while one is
being rotated out) signs with both, so a receiver that knows either accepts.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Sequence

from whodid.errors import ConfigurationError, InvalidSignature

#: The request header carrying the signature.
HEADER = "Whodid-Signature"
#: How old (or how far ahead) a signed timestamp may be, in seconds.
TOLERANCE = 300
#: The shortest secret accepted: a short one can be guessed offline from one batch.
MIN_SECRET = 16
_HEX = re.compile(r"[0-9a-f]{64}")
_SECONDS = re.compile(r"[0-9]{1,12}")  # ASCII digits only: str.isdigit() takes "²"


def check_secrets(secrets: Sequence[str]) -> list[bytes]:
    """The secrets as bytes, refusing none, more than two, or short ones."""
    if isinstance(secrets, str | bytes):
        raise ConfigurationError("secrets must be a list of strings, e.g. [new] or [new, old]")
    if not 1 <= len(secrets) <= 2:
        raise ConfigurationError(
            "give one signing secret, or two while rotating (the new one and the old one); "
            f"got {len(secrets)}"
        )
    for secret in secrets:
        if not isinstance(secret, str) or len(secret) < MIN_SECRET:
            raise ConfigurationError(
                f"a signing secret must be a string of at least {MIN_SECRET} characters; "
                'make one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
            )
    return [s.encode() for s in secrets]


def sign(body: bytes, secrets: Sequence[str], timestamp: int | None = None) -> str:
    """The signature header's value for ``body``, signed with every secret.

    Args:
        body: the exact bytes sent.
        secrets: one secret, or two while rotating.
        timestamp: unix seconds (now if None).

    Returns:
        ``"t=1733364000,v1=5f2b...,v1=9c1e..."``.
    """
    keys = check_secrets(secrets)
    t = int(time.time()) if timestamp is None else timestamp
    signed = b"%d." % t + body
    parts = [f"t={t}"] + ["v1=" + hmac.new(key, signed, hashlib.sha256).hexdigest() for key in keys]
    return ",".join(parts)


def verify(
    body: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    tolerance: int = TOLERANCE,
    now: float | None = None,
) -> int:
    """Check a received batch's signature; its timestamp, or :class:`InvalidSignature`.

    Args:
        body: the request body exactly as received (before any decoding).
        header: the ``Whodid-Signature`` header's value.
        secrets: the secrets this receiver accepts (two while rotating).
        tolerance: how many seconds the timestamp may be from ``now``.

    Example:
        >>> verify(request.body, request.headers.get("Whodid-Signature"), [SECRET])
    """
    keys = check_secrets(secrets)
    if not header:
        raise InvalidSignature(f"no {HEADER} header: the batch is not signed")
    timestamp, given = None, []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and _SECONDS.fullmatch(value):
            timestamp = int(value)
        elif name == "v1" and _HEX.fullmatch(value):
            given.append(value)
    if timestamp is None or not given:
        raise InvalidSignature(f"{HEADER} must read t=<unix seconds>,v1=<hex>")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise InvalidSignature(
            f"the signature's timestamp is {int(current - timestamp)} s from now (more than "
            f"{tolerance} s): a replayed batch, or a clock to fix"
        )
    signed = b"%d." % timestamp + body
    for key in keys:
        expected = hmac.new(key, signed, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(expected, v) for v in given):
            return timestamp
    raise InvalidSignature("no signature matches a known secret: the body or secret differs")
