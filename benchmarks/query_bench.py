"""Query and export speed on a seeded log (see seed.py).

    python benchmarks/query_bench.py URL

Prints medians of list pages (first, 10,000 and 100,000 deep), free-text
search, and export throughput with the exporting process's peak memory.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import sqlalchemy as sa

from whodid import Auditor
from whodid.query import Filters, encode_cursor
from whodid.entry import Entry
from whodid.schema import entries


def median_ms(fn: Any, runs: int = 25) -> float:
    fn()  # warm
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def cursor_at(auditor: Auditor, depth: int, **filters: Any) -> str:
    """The cursor a client would hold after paging ``depth`` entries deep."""
    spec = Filters.build(**filters)
    start, end = spec.window()
    c = entries.c
    stmt = (sa.select(entries).where(*spec.conditions(), c.occurred_at >= start,
                                     c.occurred_at <= end)
            .order_by(c.occurred_at.desc(), c.seq.desc()).offset(depth - 1).limit(1))
    assert auditor.engine is not None
    with auditor.engine.connect() as conn:
        row = conn.execute(stmt).mappings().one()
    return encode_cursor(Entry.from_row(row), spec)


def export_run(url: str, **filters: Any) -> tuple[int, float, float]:
    """(rows, seconds, peak RSS MiB) of an export in a fresh process."""
    code = (
        "import sys, time, json, resource\n"
        "from whodid import Auditor\n"
        "a = Auditor(sys.argv[1]); f = json.loads(sys.argv[2])\n"
        "out = open('/dev/null', 'wb'); t = time.perf_counter()\n"
        "n = a.export(out, 'csv', **f)\n"
        "print(n, time.perf_counter() - t, "
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, url, json.dumps(filters)],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), float(out[1]), float(out[2])


def main(url: str) -> None:
    auditor = Auditor(url)
    big = {"tenant_id": "org_big"}
    filt = {"tenant_id": "org_big", "action": "payment.refund"}
    results = {
        "first page (tenant)": median_ms(lambda: auditor.list(**big)),
        "first page (tenant + action)": median_ms(lambda: auditor.list(**filt)),
    }
    for depth in (10_000, 100_000):
        cur = cursor_at(auditor, depth, **big)
        results[f"page {depth:,} deep (tenant)"] = median_ms(
            lambda cur=cur: auditor.list(cursor=cur, **big))
    cur = cursor_at(auditor, 10_000, **filt)
    results["page 10,000 deep (tenant + action)"] = median_ms(
        lambda: auditor.list(cursor=cur, **filt))
    results["q='user123@example' (tenant)"] = median_ms(
        lambda: auditor.list(q="user123@example", **big), runs=9)
    results["q='pay_012345' (tenant)"] = median_ms(
        lambda: auditor.list(q="pay_012345", **big), runs=9)
    for name, ms in results.items():
        print(f"{name:40s} {ms:8.2f} ms")
    recent = (dt.datetime.now(dt.UTC) - dt.timedelta(days=30)).isoformat()
    for label, filters in (("export ~100k (last 30 days)", {"start": recent}),
                           ("export all", {})):
        n, secs, rss = export_run(url, **filters)
        print(f"{label:40s} {n:,} rows in {secs:.1f} s = {n / secs:,.0f} rows/s, "
              f"peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main(sys.argv[1])
