"""OpenTelemetry, when the app uses it: the active trace and span of an entry.

Looked up in ``sys.modules`` rather than imported: whodid needs no OpenTelemetry
of its own, and an app that traces has imported it already.
"""

from __future__ import annotations

import sys
from typing import Any


def active_span_ids() -> dict[str, str] | None:
    """``{"trace_id", "span_id"}`` (lower-case hex) of the active span, or None."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


def tag_request(request_id: str) -> None:
    """Set ``whodid.request_id`` on the active span, so a trace finds its audit entries."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return
    span: Any = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("whodid.request_id", request_id)
