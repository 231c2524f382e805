"""What a log stream ships (:class:`Batch`) and where to (:class:`Destination`)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, Protocol

from whodid.entry.fields import COLUMNS

_SEQ = COLUMNS.index("seq")


@dataclasses.dataclass(frozen=True)
class Batch:
    """Entries shipped together, oldest first.

    Attributes:
        rows: the stored rows, tuples in :data:`~whodid.entry.fields.COLUMNS`
            order with the JSON columns as JSON text.
        lines: each entry as one NDJSON line (``"\\n"``-terminated), the same
            bytes ``whodid export --format ndjson`` writes.
    """

    rows: Sequence[tuple[Any, ...]]
    lines: Sequence[str]

    @functools.cached_property
    def body(self) -> bytes:
        """The batch as an NDJSON document (built once, however often it is sent)."""
        return "".join(self.lines).encode("utf-8")

    @property
    def seqs(self) -> tuple[int, int]:
        """The first and last seq in the batch."""
        return self.rows[0][_SEQ], self.rows[-1][_SEQ]

    def __len__(self) -> int:
        return len(self.rows)


class Destination(Protocol):
    """Where a relay ships batches.

    ``send`` returns once the destination has the batch (written and flushed,
    acknowledged by the server) and raises :class:`~whodid.errors.DeliveryError`
    otherwise; the relay retries the same batch. ``name`` identifies the
    destination in the relay's default stream name and in errors.
    """

    name: str

    def send(self, batch: Batch) -> None: ...

    def close(self) -> None: ...
