"""A file wrapper that hashes what is written through it (the export a bundle names)."""

from __future__ import annotations

import hashlib
import io
from typing import Any


class _Text(io.TextIOBase):
    def __init__(self, target: Any) -> None:
        self.target, self.sha = target, hashlib.sha256()

    def write(self, text: str) -> int:
        self.sha.update(text.encode("utf-8"))
        return int(self.target.write(text))

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


class _Binary(io.RawIOBase):
    def __init__(self, target: Any) -> None:
        self.target, self.sha = target, hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.sha.update(data)
        return int(self.target.write(data))

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


def hashing(fileobj: Any) -> Any:
    """``fileobj`` (text or binary) wrapped so its SHA-256 is known after writing:
    ``.hexdigest()``. Text is hashed as UTF-8, the bytes it becomes on disk."""
    return _Text(fileobj) if isinstance(fileobj, io.TextIOBase) else _Binary(fileobj)
