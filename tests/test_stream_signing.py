"""The signature of stream batches, as a receiver checks it (the hostile cases first)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from whodid.errors import ConfigurationError, InvalidSignature
from whodid.stream import sign_batch, verify_signature

NEW = "new-secret-0123456789abcdef"
OLD = "old-secret-0123456789abcdef"
BODY = b'{"id":"log_01","action":"payment.refund"}\n'
T = 1_780_000_000


def test_a_signed_batch_verifies_and_gives_its_timestamp():
    header = sign_batch(BODY, [NEW], timestamp=T)
    expected = hmac.new(NEW.encode(), b"%d." % T + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={T},v1={expected}"
    assert verify_signature(BODY, header, [NEW], now=T + 10) == T


def test_a_changed_body_is_refused():
    header = sign_batch(BODY, [NEW], timestamp=T)
    with pytest.raises(InvalidSignature, match="no signature matches"):
        verify_signature(BODY.replace(b"refund", b"capture"), header, [NEW], now=T)


def test_a_replay_past_the_tolerance_is_refused():
    header = sign_batch(BODY, [NEW], timestamp=T)
    with pytest.raises(InvalidSignature, match="replayed"):
        verify_signature(BODY, header, [NEW], now=T + 301)
    with pytest.raises(InvalidSignature, match="replayed"):
        verify_signature(BODY, header, [NEW], now=T - 301)  # from the future


def test_a_moved_timestamp_breaks_the_signature():
    header = sign_batch(BODY, [NEW], timestamp=T)
    moved = header.replace(f"t={T}", f"t={T + 1000}")
    with pytest.raises(InvalidSignature, match="no signature matches"):
        verify_signature(BODY, moved, [NEW], now=T + 1000)


def test_two_secrets_sign_while_rotating_and_either_receiver_accepts():
    header = sign_batch(BODY, [NEW, OLD], timestamp=T)
    assert header.count("v1=") == 2
    assert verify_signature(BODY, header, [OLD], now=T) == T
    assert verify_signature(BODY, header, [NEW], now=T) == T
    # A receiver holding both accepts a sender that has switched already.
    assert verify_signature(BODY, sign_batch(BODY, [NEW], timestamp=T), [NEW, OLD], now=T) == T


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "v1=abc",
        f"t={T}",
        f"t={T},v1=zz",
        f"t=-{T},v1={'0' * 64}",
        f"t={T},v1={'é' * 64}",
        f"t={'9' * 40},v1={'0' * 64}",
        "t=,v1=",
        "garbage",
    ],
)
def test_malformed_headers_are_refused_not_crashed_on(header):
    with pytest.raises(InvalidSignature):
        verify_signature(BODY, header, [NEW], now=T)


def test_the_wrong_secret_is_refused():
    with pytest.raises(InvalidSignature):
        verify_signature(BODY, sign_batch(BODY, [OLD], timestamp=T), [NEW], now=T)


@pytest.mark.parametrize("secrets", [[], ["short"], [NEW, OLD, NEW + "x"], NEW])
def test_unusable_secrets_are_refused_on_both_sides(secrets):
    with pytest.raises(ConfigurationError):
        sign_batch(BODY, secrets)
    with pytest.raises(ConfigurationError):
        verify_signature(BODY, "t=1,v1=00", secrets)
