"""The benchmark suite runs end to end: `benchmarks/run.py --smoke` on SQLite and the test
PostgreSQL, tiny counts. It checks that the results table is produced with every row, never
how fast anything was (smoke figures mean nothing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.pgserver import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
DBS = ("sqlite", "postgresql")

EXPECTED = {
    *(
        f"asgi/{n}"
        for n in (
            "bare",
            "whodid",
            "correlation_id",
            "starlette_context",
            "noop_base_http",
            "noop_asgi",
            "echo_floor",
            "minimal_context",
        )
    ),
    *(
        f"load/{n}"
        for n in (
            "bare",
            "whodid",
            "echo_floor",
            "minimal_context",
            "correlation_id",
            "starlette_context",
        )
    ),
    *(f"crud/{db}/{op}" for db in DBS for op in ("insert", "update", "delete")),
    *(f"bulk/{db}" for db in DBS),
    *(
        f"list/{db}/{f}/{k}"
        for db in DBS
        for f in ("tenant", "action")
        for k in ("first", "deep", "ratio")
    ),
    *(f"search/{db}/{k}" for db in DBS for k in ("rare", "common", "rare_any")),
    *(f"export/{db}/{k}" for db in DBS for k in ("recent", "all")),
    *(f"verify/{db}/{k}" for db in DBS for k in ("seal", "verify")),
}

TITLES = (
    "## Targets",
    "## Machine and versions",
    "## Request that writes nothing: in-process ASGI call",
    "## Request that writes nothing: uvicorn on 127.0.0.1 under load",
    "## Single-row write transactions (ORM Session, commit each)",
    "## One flush of 100 inserts",
    "## List pages of 50 at 2,000 entries",
    "## Free-text search `q` at 2,000 entries",
    "## CSV export",
    "## Seal and verify",
)


@pytest.mark.postgres
def test_smoke_run_writes_every_row(pg_server: PostgresServer, tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--smoke",
            "--pg-url",
            pg_server.url(),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]

    text = out.read_text()
    for title in TITLES:
        assert title in text, f"{title!r} missing from RESULTS.md"
    for package in (
        "SQLAlchemy",
        "SQLAlchemy-Continuum",
        "PostgreSQL-Audit",
        "asgi-correlation-id",
        "starlette-context",
        "PostgreSQL server",
        "cpu",
    ):
        assert f"| {package} |" in text

    data = json.loads(out.with_suffix(".json").read_text())
    assert data["errors"] == []
    rows = {row["id"]: row for section in data["sections"] for row in section["rows"]}
    assert set(rows) == EXPECTED
    for section in data["sections"]:
        table = text.split(f"## {section['title']}", 1)[1]
        for row in section["rows"]:
            first = row[section["columns"][0]]
            assert first and f"| {first} |" in table, (row["id"], first)
            assert all(str(row.get(c, "")) != "" for c in section["columns"]), row


def test_a_missed_write_target_names_the_floor_that_is_over_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_orm

    def verdict(**medians: float) -> str:
        results = {name: [value] * 3 for name, value in medians.items()}
        return bench_orm._verdict(results, list(results), 1.3, False)[1]

    floors = {"bare": 100.0, "floor": 120.0, "capture": 125.0}
    assert verdict(**floors, whodid=160.0, minimal=140.0) == (
        "MISSED: 1.60x > 1.30x; out of reach: the entry row + capture + minimal entries alone"
        " is 1.40x"
    )
    # Every floor under the target: missed, and nothing says it was out of reach.
    assert verdict(**floors, whodid=160.0, minimal=128.0) == "MISSED: 1.60x > 1.30x"
    # Only the database's row over it: that floor is named.
    assert verdict(bare=100.0, floor=135.0, whodid=160.0) == (
        "MISSED: 1.60x > 1.30x; out of reach: the entry row alone is 1.35x"
    )
    assert verdict(**floors, whodid=125.0, minimal=128.0) == "met"


def test_stream_benchmark_writes_its_section(pg_server: PostgresServer, tmp_path: Path) -> None:
    """bench_stream.py end to end with tiny counts: both databases, throughput and lag rows."""
    out = tmp_path / "RESULTS.md"
    out.write_text("# whodid benchmark results\n")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_stream.py"),
            "--entries",
            "300",
            "--seconds",
            "1",
            "--rounds",
            "1",
            "--pg-url",
            pg_server.url(),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    for db in ("SQLite (WAL)", "PostgreSQL"):
        assert f"Stream to HTTPS: {db} / throughput" in text
        assert f"Stream to HTTPS: {db} / lag at" in text
    assert text.startswith("# whodid benchmark results")
