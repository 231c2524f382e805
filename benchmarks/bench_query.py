"""Workloads 5 to 8 on a seeded log: list pages, free-text search, CSV export, verify.

The log is seeded by ``seed.py`` (COPY on PostgreSQL), both databases at once
in two processes. List and search run in this process through the public API
(``Auditor.list``), their variants taking turns within each round. Export,
seal and verify each run in a fresh process (``bench_proc.py``), so the peak
memory reported is theirs alone.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from common import (
    NO_TARGET,
    Section,
    fmt_num,
    interleave,
    median,
    quartiles,
    status,
    timed,
)

from whodid import ALL_TENANTS
from whodid.testing import cursor_at

HERE = Path(__file__).resolve().parent
DB_LABEL = {"postgresql": "PostgreSQL", "sqlite": "SQLite (WAL)"}
LIST_TARGET_MS = 20.0
DEEP_RATIO = 1.5
SEARCH_TARGET_MS = 200.0
EXPORT_RATE = 100_000
EXPORT_PEAK_MIB = 200.0
VERIFY_RATE = 100_000


def seed_all(urls: dict[str, str], n: int) -> dict[str, float]:
    """Seed every database with ``n`` entries, in parallel; seconds each took."""
    import seed

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(len(urls)) as pool:
        took = pool.starmap(seed.seed, [(url, n) for url in urls.values()])
    return dict(zip(urls, took, strict=True))


def _ms_variants(
    auditor: Any, variants: dict[str, dict[str, Any]], rounds: int
) -> dict[str, list[float]]:
    def once(name: str, _round: int) -> float:
        kwargs = variants[name]
        page = None

        def call() -> None:
            nonlocal page
            page = auditor.list(**kwargs)

        ms = timed(call) * 1000
        assert page is not None and page.entries, f"{name}: empty page"
        return ms

    for name in variants:  # warm caches and the statement cache, unmeasured
        once(name, -1)
    return interleave(list(variants), rounds, once)


def _search_terms(auditor: Any, n: int) -> tuple[str, str]:
    """A rare term (an entity id) and a common one (a user's email), taken from the log."""
    from whodid.store.schema import entries

    c = entries.c
    with auditor.engine.connect() as conn:
        rare = conn.execute(
            sa.select(c.entity_id)
            .where(c.tenant_id == "org_big", c.entity_type == "payment", c.seq >= n // 3)
            .order_by(c.seq)
            .limit(1)
        ).scalar_one()
        label = conn.execute(
            sa.select(c.actor_label)
            .where(c.tenant_id == "org_big", c.actor_type == "user", c.seq >= n // 2)
            .order_by(c.seq)
            .limit(1)
        ).scalar_one()
    return rare, label.split(".")[0]  # 'user124@example'


def _fmt_ms(values: list[float]) -> str:
    lo, hi = quartiles(values)
    return f"{median(values):.2f} ({lo:.2f}-{hi:.2f})"


def read_sections(
    urls: dict[str, str], n: int, list_rounds: int, search_rounds: int, smoke: bool
) -> list[Section]:
    from whodid import Auditor

    deep = 100_000 if not smoke else max(2, n // 10)
    action_deep = n // 25 if not smoke else max(2, n // 100)
    listing = Section(
        "list",
        f"List pages of 50 at {n:,} entries",
        ["database", "query", "ms (median, IQR)", "target", "status"],
        intro=(
            f"`Auditor.list(...)` through the public API (filters validated, one query, rows "
            f"turned into Entry objects, next cursor made). Cursors for deep pages are those "
            f"a client holds after paging that far. {list_rounds} interleaved rounds."
        ),
        label_cols=["database", "query"],
        figure_cols=["ms (median, IQR)"],
    )
    search = Section(
        "search",
        f"Free-text search `q` at {n:,} entries (first page of 50)",
        ["database", "query", "matches", "ms (median, IQR)", "target", "status"],
        intro=(
            "`Auditor.list(q=...)`. On PostgreSQL the pg_trgm GIN index `ix_whodid_search` "
            "over the `whodid_search` table serves the indexed log, and the entries "
            f"written since the last `index_search()` ({SEARCH_TAIL:,} here, written in one "
            "transaction after the seed) are scanned through the queue; on SQLite a scan."
        ),
        label_cols=["database", "query"],
        figure_cols=["ms (median, IQR)"],
    )
    for db, url in urls.items():
        auditor = Auditor(url)
        big = {"tenant_id": "org_big"}
        act = {"tenant_id": "org_big", "action": "payment.refund"}
        variants = {
            "tenant/first": big,
            f"tenant/deep{deep}": {**big, "cursor": cursor_at(auditor, deep, **big)},
            "action/first": act,
            f"action/deep{action_deep}": {**act, "cursor": cursor_at(auditor, action_deep, **act)},
        }
        res = _ms_variants(auditor, variants, list_rounds)
        labels = {
            "tenant/first": "tenant_id filter, first page",
            f"tenant/deep{deep}": f"tenant_id filter, page {deep:,} deep",
            "action/first": "tenant_id + action filter, first page",
            f"action/deep{action_deep}": f"tenant_id + action filter, page {action_deep:,} deep",
        }
        pg = db == "postgresql"
        for key, label in labels.items():
            ok = median(res[key]) < LIST_TARGET_MS if pg else None
            listing.add(
                f"{db}/{key.split('/')[0]}/{key.split('/')[1].rstrip('0123456789')}",
                database=DB_LABEL[db],
                query=label,
                **{
                    "ms (median, IQR)": _fmt_ms(res[key]),
                    "target": f"< {LIST_TARGET_MS:.0f} ms" if pg else NO_TARGET,
                    "status": status(ok),
                },
            )
        for prefix, depth_key, label in (
            ("tenant", f"tenant/deep{deep}", f"tenant_id filter: {deep:,} deep / first"),
            (
                "action",
                f"action/deep{action_deep}",
                f"tenant_id + action: {action_deep:,} deep / first",
            ),
        ):
            ratio = median(res[depth_key]) / median(res[f"{prefix}/first"])
            listing.add(
                f"{db}/{prefix}/ratio",
                database=DB_LABEL[db],
                query=label,
                **{
                    "ms (median, IQR)": f"{ratio:.2f}x",
                    "target": f"< {DEEP_RATIO}x",
                    "status": status(ratio < DEEP_RATIO),
                },
            )

        if pg:
            _write_unindexed(auditor, SEARCH_TAIL)
        rare, common = _search_terms(auditor, n)
        q_variants = {
            "rare": {**big, "q": rare},
            "common": {**big, "q": common},
            "rare_any": {"q": rare, "tenant_id": ALL_TENANTS},
        }
        q_labels = {
            "rare": f"q={rare!r} (an entity id), tenant org_big",
            "common": f"q={common!r} (an actor's email), tenant org_big",
            "rare_any": f"q={rare!r}, every tenant",
        }
        rounds = search_rounds
        slow = max(timed(lambda v=v, a=auditor: a.list(**v)) for v in q_variants.values())
        if slow > 1.0:  # a scan of a big table: fewer rounds keep the run bounded
            rounds = min(rounds, 3)
            search.notes.append(f"{DB_LABEL[db]}: {rounds} rounds (a query took > 1 s)")
        qres = _ms_variants(auditor, q_variants, rounds)
        for key, label in q_labels.items():
            matches = auditor.count(**q_variants[key])
            ok = median(qres[key]) < SEARCH_TARGET_MS if pg else None
            search.add(
                f"{db}/{key}",
                database=DB_LABEL[db],
                query=label,
                matches=f"{matches:,}",
                **{
                    "ms (median, IQR)": _fmt_ms(qres[key]),
                    "target": f"< {SEARCH_TARGET_MS:.0f} ms" if pg else NO_TARGET,
                    "status": status(ok),
                },
            )
        assert auditor.engine is not None
        auditor.engine.dispose()
    return [listing, search]


SEARCH_TAIL = 1_000


def _write_unindexed(auditor: Any, count: int) -> None:
    """Entries the search indexer has not seen yet, as a live log always has."""
    from whodid import Actor
    from whodid.context import RequestContext
    from whodid.store.writer import Change

    ctx = RequestContext(actor=Actor.user("usr_tail", "tail@example.com"), tenant_id="org_big")
    changes = [
        Change(
            "payment",
            "update",
            "payment",
            f"pay_tail{i}",
            {"status": "pending"},
            {"status": "settled"},
        )
        for i in range(count)
    ]
    with auditor.engine.begin() as conn:
        auditor.writer.write(conn, auditor.writer.rows(changes, ctx))


def _proc(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(HERE / "bench_proc.py"), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench_proc {args[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def export_section(urls: dict[str, str], n: int, rounds: int) -> Section:
    sec = Section(
        "export",
        "CSV export (`Auditor.export`, to /dev/null, fresh process)",
        [
            "database",
            "entries",
            "rows/s (median)",
            "peak RSS MiB (max)",
            "RSS growth MiB",
            "target",
            "status",
        ],
        intro=(
            f"Every entry of the last 30 days (~10 %) and every entry ({n:,}); {rounds} "
            "interleaved rounds. Peak RSS is the whole process (interpreter and imports "
            "included); growth is peak minus the RSS just before the export started. "
            "Flat: the full export peaks at most 10 % (or 10 MiB) above the ~10 % one."
        ),
        label_cols=["database", "entries"],
        figure_cols=["rows/s (median)", "peak RSS MiB (max)"],
    )
    recent = (dt.datetime.now(dt.UTC) - dt.timedelta(days=30)).isoformat()
    for db, url in urls.items():
        variants = {"recent": json.dumps({"start": recent}), "all": "{}"}
        res = interleave(
            list(variants),
            rounds,
            lambda v, r, url=url, variants=variants: _proc("export", url, variants[v]),
        )
        peaks = {v: max(r["peak_mib"] for r in res[v]) for v in variants}
        flat = peaks["all"] - peaks["recent"] <= max(10.0, 0.1 * peaks["recent"])
        for v in variants:
            rows = res[v][0]["rows"]
            rate = median([r["rows"] / r["seconds"] for r in res[v]])
            growth = max(r["peak_mib"] - r["before_mib"] for r in res[v])
            if v == "all":
                expected = res[v][0]["expected"]  # the log when that export began
                if rows != expected:
                    raise RuntimeError(f"{db}: export wrote {rows} rows, expected {expected}")
                ok = rate >= EXPORT_RATE and peaks[v] < EXPORT_PEAK_MIB and flat
                target = f">= {EXPORT_RATE:,} rows/s, peak < {EXPORT_PEAK_MIB:.0f} MiB, flat"
                problems = []
                if rate < EXPORT_RATE:
                    problems.append("rate")
                if peaks[v] >= EXPORT_PEAK_MIB:
                    problems.append("peak")
                if not flat:
                    problems.append("not flat")
                verdict = status(ok) + ("" if ok else ": " + ", ".join(problems))
            else:
                target, verdict = NO_TARGET, NO_TARGET
            sec.add(
                f"{db}/{v}",
                database=DB_LABEL[db],
                entries=f"{rows:,}",
                **{
                    "rows/s (median)": fmt_num(rate, 0),
                    "peak RSS MiB (max)": f"{peaks[v]:.0f}",
                    "RSS growth MiB": f"{growth:.0f}",
                    "target": target,
                    "status": verdict,
                },
            )
    return sec


def verify_section(urls: dict[str, str], n: int, rounds: int) -> Section:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    sec = Section(
        "verify",
        "Seal and verify (`Auditor(url, signing_key=Ed25519PrivateKey)`)",
        [
            "database",
            "step",
            "entries",
            "entries/s (median)",
            "seconds (median)",
            "peak RSS MiB",
            "target",
            "status",
        ],
        intro=(
            f"One `seal()` over the whole seeded log, then `verify()` in {rounds} rounds, "
            "each in a fresh process."
        ),
        label_cols=["database", "step"],
        figure_cols=["entries/s (median)", "seconds (median)"],
    )
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as f:
        f.write(pem)
        key_path = f.name
    try:
        for db, url in urls.items():
            sealed = _proc("seal", url, key_path)
            sec.add(
                f"{db}/seal",
                database=DB_LABEL[db],
                step="seal()",
                **{
                    "entries": f"{sealed['rows']:,}",
                    "entries/s (median)": fmt_num(sealed["rows"] / sealed["seconds"], 0),
                    "seconds (median)": f"{sealed['seconds']:.2f}",
                    "peak RSS MiB": f"{sealed['peak_mib']:.0f}",
                    "target": NO_TARGET,
                    "status": NO_TARGET,
                },
            )
            res = [_proc("verify", url, key_path) for _ in range(rounds)]
            for r in res:
                if not r["ok"] or r["rows"] < n:
                    raise RuntimeError(f"{db}: verify did not pass on the seeded log: {r}")
            rate = median([r["rows"] / r["seconds"] for r in res])
            sec.add(
                f"{db}/verify",
                database=DB_LABEL[db],
                step="verify()",
                **{
                    "entries": f"{res[0]['rows']:,}",
                    "entries/s (median)": fmt_num(rate, 0),
                    "seconds (median)": f"{median([r['seconds'] for r in res]):.2f}",
                    "peak RSS MiB": f"{max(r['peak_mib'] for r in res):.0f}",
                    "target": f">= {VERIFY_RATE:,} entries/s",
                    "status": status(rate >= VERIFY_RATE),
                },
            )
    finally:
        Path(key_path).unlink(missing_ok=True)
    return sec
