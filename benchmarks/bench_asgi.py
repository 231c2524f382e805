"""Workload 1: a request that writes nothing, as in-process ASGI calls.

No server, no sockets: the app is awaited directly with a ready-made scope, so
the figure is the Python cost of the stack per request. Every contender is the
same Starlette app (``apps.py``); they take turns within each round.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from apps import CONTENDERS, available
from common import (
    NO_TARGET,
    Section,
    fmt_delta,
    fmt_num,
    fmt_ratio,
    median,
    paired_deltas,
    paired_ratios,
    rotations,
    status,
)

TARGET_US = 3.0  # whodid: at most +3 µs over the bare request

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "root_path": "",
    "query_string": b"",
    "headers": [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36"),
        (b"accept", b"*/*"),
    ],
    "client": ("127.0.0.1", 51000),
    "server": ("127.0.0.1", 8000),
    "state": {},
}


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class _Sink:
    def __init__(self) -> None:
        self.status = 0

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]


async def _run(app: Any, n: int) -> float:
    """Microseconds per request over ``n`` requests."""
    sink = _Sink()
    headers = SCOPE["headers"]
    gc.collect()
    t = time.perf_counter()
    for _ in range(n):
        # Fresh scope and header list: middlewares may add to either.
        await app({**SCOPE, "headers": list(headers), "state": {}}, _receive, sink)
    took = time.perf_counter() - t
    if sink.status != 200:
        raise RuntimeError(f"app answered {sink.status}")
    return took / n * 1e6


def measure(rounds: int, requests: int) -> dict[str, list[float]]:
    names = [n for n in CONTENDERS if available(n)]
    apps = {n: CONTENDERS[n][1]() for n in names}

    async def main() -> dict[str, list[float]]:
        for name in names:  # warm: imports, caches, the first scope-building paths
            await _run(apps[name], max(50, requests // 10))
        results: dict[str, list[float]] = {n: [] for n in names}
        for order in rotations(names, rounds):
            for name in order:
                results[name].append(await _run(apps[name], requests))
        return results

    return asyncio.run(main())


def section(rounds: int, requests: int) -> Section:
    sec = Section(
        "asgi",
        "Request that writes nothing: in-process ASGI call",
        [
            "contender",
            "µs / request (median)",
            "over bare (µs)",
            "ratio to bare",
            "target",
            "status",
        ],
        intro=(
            f"`GET /` on one Starlette route returning `ok`, awaited directly (no server). "
            f"{rounds} interleaved rounds of {requests:,} requests each; "
            "'over bare' and 'ratio' are medians of per-round paired differences/ratios "
            "(interquartile range in brackets)."
        ),
        label_cols=["contender"],
        figure_cols=["over bare (µs)", "µs / request (median)"],
    )
    results = measure(rounds, requests)
    base = results["bare"]
    for name, (label, _, module) in CONTENDERS.items():
        if name not in results:
            sec.add(
                name,
                contender=label,
                **{
                    "µs / request (median)": "not installed",
                    "status": NO_TARGET,
                    "target": f"pip install {module}",
                },
            )
            continue
        values = results[name]
        deltas = paired_deltas(values, base)
        target = f"<= +{TARGET_US:.0f} µs" if name == "whodid" else NO_TARGET
        ok = median(deltas) <= TARGET_US if name == "whodid" else None
        sec.add(
            name,
            contender=label,
            **{
                "µs / request (median)": fmt_num(median(values), 2),
                "over bare (µs)": "-" if name == "bare" else fmt_delta(deltas),
                "ratio to bare": "1.00x"
                if name == "bare"
                else fmt_ratio(paired_ratios(values, base)),
                "target": target,
                "status": status(ok),
            },
        )
    return sec
