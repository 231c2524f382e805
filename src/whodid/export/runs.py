"""One export of the log: checked before it starts, recorded when it starts and ends.

Taking a copy of the evidence is itself an action auditors ask about, so every
export writes an ``audit_log.export`` entry when it starts and one saying how
it ended (``completed`` with its row count, ``abandoned`` when the reader
stopped early, ``failed``), linked by ``metadata.chain_id``. It reads the log
as it was when it began (``metadata.upto_seq``), so its own entries are never
in it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager
from typing import IO, Any

from sqlalchemy.engine import Connection

from whodid.context import Actor
from whodid.entry.fields import new_entry_id
from whodid.errors import InvalidQuery
from whodid.export import formats, write_export
from whodid.store import query
from whodid.tenancy import ALL_TENANTS

#: record("audit_log.export", actor=..., tenant_id=..., metadata=...), the Auditor's.
Record = Callable[..., None]


class ExportRun:
    """An export about to run: its filters checked and its start recorded.

    Args:
        connect: a context manager giving a connection to the log.
        record: the Auditor's ``record``.
        spec: the export's filters (its tenant chosen).
        format: ``"csv"`` or ``"ndjson"``.
        actor: who takes the copy (None: the current context's actor).
    """

    def __init__(
        self,
        connect: Callable[[], AbstractContextManager[Connection]],
        record: Record,
        spec: query.Filters,
        format: Any,
        actor: Actor | None,
    ) -> None:
        if format not in formats.FORMATS:
            raise InvalidQuery(f"format must be 'csv' or 'ndjson', got {format!r}")
        with connect() as conn:
            top = query.last_seq(conn)
        self.spec = dataclasses.replace(
            spec, upto_seq=top if spec.upto_seq is None else spec.upto_seq
        )
        self.connect, self.record, self.format, self.actor = connect, record, format, actor
        self.chain = new_entry_id().replace("log_", "exp_")
        self._note("started")

    def write(self, fileobj: IO[Any], progress: Any = None, *, fast_paths: bool = True) -> int:
        """Write the whole export to ``fileobj``; how many entries."""
        count, status = 0, "failed"
        try:
            with self.connect() as conn:
                count = write_export(
                    conn, self.spec, fileobj, self.format, progress, fast_paths=fast_paths
                )
            status = "completed"
        finally:
            self._note(status, count)
        return count

    def chunks(self, lines_per_chunk: int = 500) -> Iterator[str]:
        """The export as text chunks; closing the iterator early records ``abandoned``
        (before its first chunk too: a client may leave before anything is read)."""
        return _Chunks(self._chunks(lines_per_chunk), self._note)

    def _chunks(self, lines_per_chunk: int) -> Generator[str, None, None]:
        count, status = 0, "failed"

        def counted(rows: Iterator[Any]) -> Iterator[Any]:
            nonlocal count
            for row in rows:
                count += 1
                yield row

        try:
            chunk: list[str] = []
            with self.connect() as conn:
                rows = counted(query.iter_export_rows(conn, self.spec))
                for line in formats.lines(rows, self.format):
                    chunk.append(line)
                    if len(chunk) >= lines_per_chunk:
                        yield "".join(chunk)
                        chunk = []
            if chunk:
                yield "".join(chunk)
            status = "completed"
        except GeneratorExit:
            status = "abandoned"
            raise
        finally:
            self._note(status, count)

    def _note(self, status: str, rows: int | None = None) -> None:
        metadata: dict[str, Any] = {
            "format": self.format,
            "filters": self.spec.as_dict(),
            "status": status,
            "chain_id": self.chain,
            "upto_seq": self.spec.upto_seq,
        }
        if rows is not None:
            metadata["rows"] = rows
        tenant = self.spec.tenant_id
        self.record(
            "audit_log.export",
            actor=self.actor,
            tenant_id=None if tenant is ALL_TENANTS else tenant,
            metadata=metadata,
        )


class _Chunks:
    """An export's chunks, whose end is recorded even if it never started.

    A generator closed (or dropped) before its first ``next()`` never runs its
    ``finally``: this wrapper records ``abandoned`` for it then.
    """

    def __init__(self, chunks: Generator[str, None, None], note: Callable[..., None]) -> None:
        self._chunks, self._note = chunks, note
        self._started = self._ended = False

    def __iter__(self) -> _Chunks:
        return self

    def __next__(self) -> str:
        self._started = True
        try:
            return next(self._chunks)
        except StopIteration:
            self._ended = True
            raise

    def close(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self._started:
            self._chunks.close()  # its finally records how it ended
        else:
            self._note("abandoned", 0)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
