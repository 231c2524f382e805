"""Ed25519 keys: loading the signing and public keys, their id, and making a pair.

Separate from checkpoints and verify because it is all the configuration side
needs (``Auditor(signing_key=...)``, ``whodid keygen``): where a key comes from
(object, PEM, file) and the errors that tell a user how to fix it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from whodid.errors import ConfigurationError


def load_private_key(key: Any) -> Ed25519PrivateKey:
    """An Ed25519 private key from a key object, PEM bytes/text, or a PEM file path."""
    if isinstance(key, Ed25519PrivateKey):
        return key
    pem = _pem(key, "signing_key")
    try:
        loaded = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"signing_key is not an unencrypted PEM private key ({exc}); "
            "create one with `whodid keygen`"
        ) from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ConfigurationError(
            "signing_key must be an Ed25519 key; create one with `whodid keygen`"
        )
    return loaded


def load_public_key(key: Any) -> Ed25519PublicKey:
    """An Ed25519 public key from a key object (public or private), PEM, or a path."""
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, Ed25519PrivateKey):
        return key.public_key()
    pem = _pem(key, "public_key")
    try:
        loaded: Any = serialization.load_pem_public_key(pem)
    except ValueError:
        return load_private_key(pem).public_key()
    if not isinstance(loaded, Ed25519PublicKey):
        raise ConfigurationError("public_key must be an Ed25519 key")
    return loaded


def _pem(key: Any, name: str) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str) and key.lstrip().startswith("-----BEGIN"):
        return key.encode()
    if isinstance(key, str | os.PathLike):
        path = Path(key)
        if not path.is_file():
            raise ConfigurationError(
                f"{name} file {str(path)!r} does not exist; create a key pair with `whodid keygen`"
            )
        return path.read_bytes()
    raise ConfigurationError(f"{name} must be a key object, PEM bytes or a file path, got {key!r}")


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key_pair(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a new private key to ``path`` (mode 0600) and its public half to ``path.pub``."""
    private = Ed25519PrivateKey.generate()
    target = Path(path)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = target.with_name(target.name + ".pub")
    public.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return target, public


def key_ring(public: Ed25519PublicKey | Iterable[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    """Public keys by key id: one key, or several while keys rotate."""
    keys = [public] if isinstance(public, Ed25519PublicKey) else list(public)
    return {key_id(k): k for k in keys}
