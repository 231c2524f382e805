"""NDJSON to a file, rotated by size, or to standard output."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import IO

from whodid.errors import ConfigurationError, DeliveryError
from whodid.stream.destination import Batch


class FileDestination:
    """Append each batch to ``path`` as NDJSON, flushed to disk before it counts as sent.

    Args:
        path: the file written; rotated files are ``path.1`` (newest) to
            ``path.<backups>``, as :class:`logging.handlers.RotatingFileHandler` names them.
        max_bytes: rotate before a batch would take the file past this size
            (0: never rotate). A batch is never split across two files.
        backups: how many rotated files to keep (0: never rotate, so that
            rotating never deletes what was shipped).
        fsync: whether a batch is fsynced before the relay records it as shipped.

    Example:
        >>> auditor.stream(FileDestination("/var/log/whodid/audit.ndjson", max_bytes=100_000_000))
    """

    def __init__(
        self, path: str | os.PathLike[str], max_bytes: int = 0, backups: int = 5, fsync: bool = True
    ) -> None:
        if max_bytes < 0 or backups < 0:
            raise ConfigurationError("max_bytes and backups must not be negative")
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise ConfigurationError(
                f"cannot write {self.path}: {self.path.parent} is not a directory"
            )
        self.name = f"file:{self.path.resolve()}"
        self.max_bytes, self.backups, self.fsync = max_bytes, backups, fsync
        self._file: IO[bytes] | None = None

    def send(self, batch: Batch) -> None:
        body = batch.body
        size = None
        try:
            file = self._open()
            size = file.tell()
            if self.max_bytes and self.backups and size and size + len(body) > self.max_bytes:
                self._rotate()
                file = self._open()
                size = 0
            view = memoryview(body)
            while view:  # unbuffered: a short write says how far it got
                written = file.write(view)
                if not written:
                    raise OSError(f"wrote nothing of {len(view)} bytes")
                view = view[written:]
            if self.fsync:
                os.fsync(file.fileno())
        except OSError as exc:
            if size is not None and self._file is not None:
                # A half-written batch would glue the retry onto half a line.
                with contextlib.suppress(OSError):
                    self._file.truncate(size)
            self.close()
            raise DeliveryError(f"cannot write {self.path}: {exc}") from exc

    def _open(self) -> IO[bytes]:
        if self._file is None:
            created = not self.path.exists()
            # Unbuffered: nothing of a failed batch can linger to be written later.
            self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open
            if created and self.fsync:
                _fsync_directory(self.path.parent)  # the new name survives a power loss
        return self._file

    def _rotate(self) -> None:
        self.close()
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        if self.fsync:
            _fsync_directory(self.path.parent)

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StdoutDestination:
    """Write each batch to standard output as NDJSON (for a log shipper reading it)."""

    name = "stdout"

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout.buffer

    def send(self, batch: Batch) -> None:
        try:
            self.stream.write(batch.body)
            self.stream.flush()
        except OSError as exc:
            raise DeliveryError(f"cannot write to standard output: {exc}") from exc

    def close(self) -> None:
        pass
